"""RL trainer: learning, exact resume, merge, metrics/outputs, and bad-input errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from verity.envs.registry import load_environment
from verity.errors import ConfigError
from verity.train.config import RLConfig
from verity.train.rl import RLTrainer

VOWEL_ENV = str(Path(__file__).parent / "data" / "vowel_env.py")


def _cfg(out, **kw):
    base = dict(env=VOWEL_ENV, group_size=8, groups_per_batch=4, lr=3e-3, max_tokens=8, steps=4,
                lora_rank=0, save_every=2, output_dir=str(out), seed=1)
    base.update(kw)
    return RLConfig(**base)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_mean_reward_rises(tiny_model_dir, tmp_path):
    env = load_environment(VOWEL_ENV)
    tr = RLTrainer(env, tiny_model_dir, _cfg(tmp_path, groups_per_batch=8, steps=30, save_every=100))
    tr.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["reward/mean"] for r in rows[:5]) / 5
    last = sum(r["reward/mean"] for r in rows[-5:]) / 5
    assert last > first + 0.15, (first, last)
    # one line per step with the documented keys
    assert len(rows) == 30
    for k in ("reward/mean", "reward/std", "reward/vowel_reward", "reward/length_metric", "loss", "kl",
              "clip_frac", "entropy", "grad_norm", "lr", "completion_len/mean", "completion_len/max",
              "frac_zero_std", "tokens", "time/generate", "time/score", "time/train"):
        assert k in rows[-1], k
    assert (tmp_path / "reward_curve.png").stat().st_size > 1000
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["config"]["group_size"] == 8


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_resume_equals_uninterrupted(tiny_model_dir, tmp_path, lora_rank):
    env = load_environment(VOWEL_ENV)
    straight = RLTrainer(env, tiny_model_dir, _cfg(tmp_path / "a", lora_rank=lora_rank))
    straight.train()
    first = RLTrainer(env, tiny_model_dir, _cfg(tmp_path / "b", lora_rank=lora_rank, steps=2))
    first.train()  # "killed" after 2 steps: a fresh trainer resumes from the checkpoint
    resumed = RLTrainer(env, tiny_model_dir, _cfg(tmp_path / "b", lora_rank=lora_rank, resume=True))
    resumed.train()
    a, b = _params(straight.model), _params(resumed.model)
    assert a.keys() == b.keys()
    moved = any(not torch.equal(a[k], _params(first.model)[k]) for k in a)
    assert moved, "training did not change the parameters"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_merge_matches_adapter_logits(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from verity.train.checkpoint import merge_run

    env = load_environment(VOWEL_ENV)
    tr = RLTrainer(env, tiny_model_dir, _cfg(tmp_path / "run", lora_rank=4, steps=2, lr=5e-2))
    tr.train()
    merge_run(str(tmp_path / "run"), str(tmp_path / "merged"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    ids = torch.randint(0, 400, (2, 12))
    tr.model.eval()
    with torch.no_grad():
        ref = tr.model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(input_ids=ids).logits
    assert not torch.allclose(ref, base, atol=1e-4), "adapter had no effect"
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert (tmp_path / "merged" / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("kw,msg", [
    ({"group_size": 1}, "group-size"),
    ({"groups_per_batch": 500}, "does not fit"),
    ({"loss": "ppo2"}, "unknown loss"),
    ({"lr": 0}, "--lr"),
])
def test_bad_config_fails_before_compute(tiny_model_dir, tmp_path, kw, msg):
    env = load_environment(VOWEL_ENV)
    with pytest.raises(ConfigError, match=msg):
        RLTrainer(env, tiny_model_dir, _cfg(tmp_path, **kw))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_env_without_rubric_is_an_error(tiny_model_dir, tmp_path):
    from datasets import Dataset

    import verity

    env = verity.SingleTurnEnv(dataset=Dataset.from_list([{"question": "q"}] * 8))
    with pytest.raises(ConfigError, match="no rubric"):
        RLTrainer(env, tiny_model_dir, _cfg(tmp_path, groups_per_batch=2))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "verity", *args], capture_output=True, text=True, timeout=300)


def test_cli_train_then_plot_and_merge(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    r = _cli("train", VOWEL_ENV, "-m", tiny_model_dir, "--group-size", "4", "--groups-per-batch", "2",
             "--max-tokens", "6", "--steps", "2", "--lora-rank", "4", "--lr", "1e-2", "-o", str(run),
             "--eval-examples", "4", "--loss", "dapo", "--advantage", "rloo", "--scale-rewards", "none")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "eval/reward/mean" in rows[-1]
    (run / "reward_curve.png").unlink()
    assert _cli("plot", str(run)).returncode == 0 and (run / "reward_curve.png").exists()
    r = _cli("merge", str(run), "-o", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr
    r = _cli("eval", VOWEL_ENV, "-m", str(tmp_path / "merged"), "-n", "2", "-r", "1", "-t", "4", "--json",
             "-o", str(tmp_path / "ev"))
    assert r.returncode == 0, r.stderr
    assert "vowel_reward" in json.loads(r.stdout)["metrics"]


@pytest.mark.parametrize("args,msg", [
    (["--loss", "nope"], "invalid choice"),
    (["--group-size", "1"], "group-size"),
    (["--config", "/nonexistent.toml"], "not found"),
])
def test_cli_bad_input(tiny_model_dir, tmp_path, args, msg):
    r = _cli("train", VOWEL_ENV, "-m", tiny_model_dir, "-o", str(tmp_path / "x"), *args)
    assert r.returncode != 0
    assert msg in r.stderr and "Traceback" not in r.stderr


def test_toml_config_with_flag_override(tiny_model_dir, tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('group_size = 4\ngroups_per_batch = 2\nmax_tokens = 4\nsteps = 1\nlora_rank = 2\nlr = 0.5\n')
    r = _cli("train", VOWEL_ENV, "-m", tiny_model_dir, "--config", str(cfg_file), "--lr", "1e-3",
             "-o", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "r" / "manifest.json").read_text())["config"]
    assert cfg["group_size"] == 4 and cfg["lr"] == 1e-3
    bad = tmp_path / "bad.toml"
    bad.write_text("grup_size = 4\n")
    r = _cli("train", VOWEL_ENV, "-m", tiny_model_dir, "--config", str(bad), "-o", str(tmp_path / "r2"))
    assert r.returncode != 0 and "grup_size" in r.stderr


@pytest.mark.parametrize("loss,lora_rank,kl_beta,iters", [
    ("gspo", 4, 0.1, 1),    # KL to the base model = adapters disabled
    ("grpo", 0, 0.1, 2),    # full fine-tune: a frozen reference copy; two passes per batch
    ("dr_grpo", 0, 0.0, 1),
])
def test_loss_variants_and_kl_run(tiny_model_dir, tmp_path, loss, lora_rank, kl_beta, iters):
    env = load_environment(VOWEL_ENV)
    tr = RLTrainer(env, tiny_model_dir, _cfg(tmp_path, loss=loss, lora_rank=lora_rank, kl_beta=kl_beta,
                                             num_iterations=iters, steps=2, lr=1e-2))
    last = tr.train()
    assert torch.isfinite(torch.tensor(last["loss"]))
    if kl_beta > 0:
        assert last["kl"] > 0  # after the first update the policy differs from the reference


def test_progress_line_shows_small_values(capsys):
    from verity.train.metrics import ProgressLine

    p = ProgressLine(total=10)
    p.update(1, {"reward": 0.5, "loss": -0.0037, "lr": 5e-4, "kl": 0.0})
    line = capsys.readouterr().err
    assert "reward=0.500" in line and "loss=-3.70e-03" in line and "lr=5.00e-04" in line and "kl=0.000" in line
    assert line.startswith("step 1/10 ")


def test_on_step_callback_gets_each_metrics_line_and_progress_can_be_silenced(tiny_model_dir, tmp_path, capsys):
    env = load_environment(VOWEL_ENV)
    seen = []
    RLTrainer(env, tiny_model_dir, _cfg(tmp_path, steps=3, save_every=3)).train(on_step=seen.append, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in seen] == [1, 2, 3]
    for got, row in zip(seen, rows, strict=True):  # the lines metrics.jsonl holds
        assert (got["reward/mean"], got["loss"]) == (row["reward/mean"], row["loss"])
    assert "step 3/3" not in capsys.readouterr().err
