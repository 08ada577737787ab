"""verity dpo / verity prefs: pair checks, env-made pairs, a tiny run that learns the preference
(held-out pairwise accuracy), KTO, the LoRA reference, exact resume, and the CLI's one-line errors."""

import json
import subprocess
import sys

import pytest
import torch

from verity.errors import DatasetError
from verity.train.config import DPOConfig
from verity.train.dpo import DPOTrainer
from verity.train.pref_data import load_pairs, load_preferences
from verity.train.prefs import preference_rows
from verity.types import LabelledCompletion, PreferencePair


def _pairs(n, prefix="q"):
    return [PreferencePair(({"role": "user", "content": f"{prefix} {i}"},), ({"role": "assistant", "content": "good"},),
                           ({"role": "assistant", "content": "bad"},)) for i in range(n)]


def _cfg(tiny_model_dir, out, **kw):
    base = {"data": "x", "model": tiny_model_dir, "lr": 1e-3, "beta": 0.5, "batch_size": 4, "micro_batch_size": 2,
            "max_length": 128, "output_dir": str(out), "save_every": 2}
    return DPOConfig(**{**base, **kw})


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(("row", "field", "why"), [
    ({"prompt": "p", "chosen": "a"}, "rejected", "missing"),
    ({"prompt": "p", "chosen": "a", "rejected": "a"}, "rejected", "identical"),
    ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "chosen", "empty text"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "prompt", "got int"),
    ({"prompt": "p", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "chosen", "no assistant"),
    ({"prompt": "p", "chosen": [], "rejected": "b"}, "chosen", "empty list"),
])
def test_malformed_pair_names_file_row_and_field(tmp_path, row, field, why):
    f = _write(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DatasetError) as e:
        load_pairs(f)
    msg = str(e.value)
    assert f"{f}, row 1, field '{field}'" in msg and why in msg and "\n" not in msg


def test_kto_rows_and_labels(tmp_path):
    chat = [{"role": "user", "content": "p"}]
    f = _write(tmp_path / "k.jsonl", [{"prompt": "p", "completion": "a", "label": True},
                                      {"prompt": chat, "completion": "b", "label": "bad"}])
    rows = load_preferences(f, kto=True)
    assert [r.desirable for r in rows if isinstance(r, LabelledCompletion)] == [True, False]
    _write(tmp_path / "k.jsonl", [{"prompt": "p", "completion": "a", "label": "maybe"}])
    with pytest.raises(DatasetError, match=r"row 0, field 'label'"):
        load_preferences(f, kto=True)


def test_preference_rows_best_vs_worst_ties_dropped():
    def rec(eid, idx, reward, text, error=None):
        return {"example_id": eid, "rollout_idx": idx, "reward": reward, "error": error,
                "prompt": [{"role": "user", "content": f"p{eid}"}],
                "completion": [{"role": "assistant", "content": text}]}

    records = [rec(0, 0, 0.5, "mid"), rec(0, 1, 1.0, "top"), rec(0, 2, 0.0, "low"), rec(0, 3, 1.0, "top2"),
               rec(1, 0, 0.3, "x"), rec(1, 1, 0.3, "y"),  # a tie: no pair
               rec(2, 0, 0.9, "z", error="boom"), rec(2, 1, 0.1, "w")]  # one failed: a single rollout, no pair
    rows, stats = preference_rows(records)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [("top", "low")]
    assert (stats.prompts, stats.rows, stats.ties, stats.failed) == (3, 1, 2, 1)
    assert stats.reward_mean == pytest.approx((0.5 + 1 + 0 + 1 + 0.3 + 0.3 + 0.1) / 7)
    kto, _ = preference_rows(records, kto_threshold=0.5)
    assert [r["label"] for r in kto] == [True, True, False, True, False, False, False]


def test_dpo_learns_the_preference_on_held_out_pairs(tiny_model_dir, tmp_path):
    t = DPOTrainer(_pairs(16), tiny_model_dir, _cfg(tiny_model_dir, tmp_path, max_steps=8), _pairs(8, "held out"))
    last = t.train()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == {**rows[0], "step": 0, "eval/rewards/accuracy": 0.5, "eval/rewards/margin": 0.0}
    assert last["eval/rewards/accuracy"] == 1.0 and last["eval/rewards/margin"] > 0.5
    assert rows[-1]["rewards/margin"] > rows[1]["rewards/margin"] and rows[-1]["loss"] < rows[1]["loss"]
    assert (tmp_path / "final" / "config.json").is_file() and (tmp_path / "loss_curve.png").is_file()


@pytest.mark.parametrize("loss", ["ipo", "hinge"])
def test_other_pair_losses_learn(tiny_model_dir, tmp_path, loss):
    t = DPOTrainer(_pairs(8), tiny_model_dir, _cfg(tiny_model_dir, tmp_path, max_steps=4, loss=loss), _pairs(4, "h"))
    assert t.train()["eval/rewards/margin"] > 0


def test_kto_separates_desirable_from_undesirable(tiny_model_dir, tmp_path):
    rows = [LabelledCompletion(({"role": "user", "content": f"q {i}"},),
                               ({"role": "assistant", "content": "good" if i % 2 else "bad"},), bool(i % 2))
            for i in range(16)]
    t = DPOTrainer(rows, tiny_model_dir, _cfg(tiny_model_dir, tmp_path, max_steps=8, loss="kto"), _pairs(4, "h"))
    last = t.train()
    assert last["rewards/chosen"] > 0 > last["rewards/rejected"] and last["eval/rewards/accuracy"] == 1.0


def test_lora_reference_is_the_base_with_adapters_disabled(tiny_model_dir, tmp_path):
    t = DPOTrainer(_pairs(8), tiny_model_dir, _cfg(tiny_model_dir, tmp_path, max_steps=3, lora_rank=4))
    t.train()
    torch.testing.assert_close(t.sequence_logps(t.units, reference=True), t.ref)  # the base, unchanged
    assert not torch.allclose(t.sequence_logps(t.units), t.ref)  # the policy moved


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_dpo_resume_equals_uninterrupted(tiny_model_dir, tmp_path, lora_rank):
    def run(out, steps, resume=False):
        t = DPOTrainer(_pairs(12), tiny_model_dir, _cfg(tiny_model_dir, out, max_steps=steps, resume=resume,
                                                         lora_rank=lora_rank, epochs=3))
        t.train()
        return t

    a = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    b = run(tmp_path / "b", 4, resume=True)
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    la = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    key = ("step", "loss", "rewards/margin")
    assert [[json.loads(x)[k] for k in key] for x in la] == [[json.loads(x)[k] for k in key] for x in lb]


def test_cli_malformed_pairs_one_line_error_and_run_kept(tiny_model_dir, tmp_path):
    good = _write(tmp_path / "good.jsonl", [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(4)])
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "verity", "dpo", "-m", tiny_model_dir, "--batch-size", "2", "--max-steps", "2",
           "--save-every", "1", "-o", str(out)]
    r = subprocess.run([*cmd[:4], good, *cmd[4:]], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "held-out" not in r.stdout and "final loss" in r.stdout
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"},
                                          {"prompt": "q", "chosen": "same", "rejected": "same"}])
    r = subprocess.run([*cmd[:4], bad, *cmd[4:], "--resume", "--max-steps", "3"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"verity dpo: error: {bad}, row 1, field 'rejected': identical to 'chosen' " \
                               "(no preference to learn)"
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing written is lost


def test_cli_prefs_makes_pairs_dpo_reads(tmp_path):
    out = tmp_path / "pairs.jsonl"
    # the bundled starter reverses text well enough that its samples score differently
    r = subprocess.run([sys.executable, "-m", "verity", "prefs", "reverse-text", "-a", '{"num_train_examples": 8}',
                        "-m", "verity-tiny", "-n", "4", "-r", "3", "-t", "16", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "from 4 prompts" in r.stdout and int(r.stdout.split()[0]) > 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(x["chosen_reward"] > x["rejected_reward"] for x in rows)
    assert len(load_pairs(str(out))) == len(rows) == int(r.stdout.split()[0])
    r = subprocess.run([sys.executable, "-m", "verity", "prefs", "reverse-text", "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr


def test_reward_model_ranks_held_out_pairs(tiny_model_dir, tmp_path):
    from verity.train.config import RMConfig
    from verity.train.reward_model import RewardModelTrainer

    cfg = RMConfig(data="x", model=tiny_model_dir, lr=1e-3, batch_size=4, micro_batch_size=2, max_length=128,
                   output_dir=str(tmp_path / "a"), save_every=2, max_steps=6, epochs=3)
    t = RewardModelTrainer(_pairs(12), tiny_model_dir, cfg, _pairs(6, "held out"))
    last = t.train()
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and last["eval/rewards/accuracy"] == 1.0 and last["eval/rewards/margin"] > 0
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(tmp_path / "a" / "final")  # a plain HF reward model
    # exact resume: 3 steps, then 3 more, equals 6 at once
    RewardModelTrainer(_pairs(12), tiny_model_dir, RMConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "b"),
                                                                "max_steps": 3})).train()
    b = RewardModelTrainer(_pairs(12), tiny_model_dir,
                           RMConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "b"), "resume": True}))
    b.train()
    for (n, p), (_, q) in zip(t.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_reward_model_rubric_scores_with_the_learned_model(tiny_model_dir, tmp_path):
    import asyncio

    import verity as vf
    from verity.train.config import RMConfig
    from verity.train.reward_model import RewardModelTrainer

    cfg = RMConfig(data="x", model=tiny_model_dir, lr=1e-3, batch_size=4, micro_batch_size=4, max_length=128,
                   output_dir=str(tmp_path), max_steps=6, epochs=3)
    RewardModelTrainer(_pairs(12), tiny_model_dir, cfg).train()
    rubric = vf.RewardModelRubric(str(tmp_path / "final"))
    prompt = [{"role": "user", "content": "q 99"}]
    good = asyncio.run(rubric.score_rollout(prompt, [{"role": "assistant", "content": "good"}]))
    bad = asyncio.run(rubric.score_rollout(prompt, [{"role": "assistant", "content": "bad"}]))
    assert good.reward > bad.reward and set(good.metrics) == {"reward_model"}


def test_cli_rm(tiny_model_dir, tmp_path):
    data = _write(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(4)])
    r = subprocess.run([sys.executable, "-m", "verity", "rm", data, "--eval-data", data, "-m", tiny_model_dir,
                        "--batch-size", "2", "--max-steps", "2", "-o", str(tmp_path / "rm")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "held-out pairwise accuracy" in r.stdout and "(4 pairs)" in r.stdout
    assert json.loads((tmp_path / "rm" / "manifest.json").read_text())["kind"] == "rm"
