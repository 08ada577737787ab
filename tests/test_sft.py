"""SFT: completion-only masking, packing boundaries, a tiny run whose loss falls, resume, CLI."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verity.errors import DatasetError
from verity.train.config import SFTConfig
from verity.train.sft import SFTTrainer
from verity.train.sft_data import load_sft_rows, pack, packed_tensors, pad_batch, tokenize_conversation

CONV = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "say hi"},
        {"role": "assistant", "content": "hi there"}]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prompt_tokens_get_no_loss(tok):
    ex = tokenize_conversation(tok, CONV, 512)
    prompt_ids = tok.apply_chat_template(CONV[:2], add_generation_prompt=True, tokenize=True)
    prompt_ids = list(prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids)
    n = len(prompt_ids)
    assert list(ex.input_ids[:n]) == prompt_ids
    assert set(ex.loss_mask[:n]) == {0}
    learned = tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask, strict=False) if m])
    assert learned.startswith("hi there") and "<|end|>" in learned
    assert "say hi" not in learned and "terse" not in learned


def test_multi_turn_masks_only_assistant_turns(tok):
    conv = CONV + [{"role": "user", "content": "again"}, {"role": "assistant", "content": "bye"}]
    ex = tokenize_conversation(tok, conv, 512)
    learned = tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask, strict=False) if m])
    assert "hi there" in learned and "bye" in learned and "again" not in learned


def test_packing_keeps_examples_independent(tiny_model_dir, tok):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    convs = [CONV, [{"role": "user", "content": "two plus two"}, {"role": "assistant", "content": "four"}],
             [{"role": "user", "content": "colour of sky"}, {"role": "assistant", "content": "blue, mostly"}]]
    exs = [tokenize_conversation(tok, c, 512) for c in convs]
    rows = pack(exs, 512)
    assert len(rows) == 1 and len(rows[0]) == 3
    t = packed_tensors(rows, tok.pad_token_id)
    with torch.no_grad():
        packed = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                       position_ids=t["position_ids"]).logits[0]
        o = 0
        for e in rows[0]:
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            torch.testing.assert_close(packed[o:o + len(e.input_ids)], alone, rtol=1e-4, atol=1e-4)
            o += len(e.input_ids)
    assert t["loss_mask"].sum() == sum(sum(e.loss_mask) for e in exs)


def test_pack_respects_max_length(tok):
    exs = [tokenize_conversation(tok, CONV, 512) for _ in range(7)]
    n = len(exs[0].input_ids)
    rows = pack(exs, 2 * n + 1)
    assert [len(r) for r in rows] == [2, 2, 2, 1]


def test_pad_batch_puts_loss_tokens_after_the_prompt_column(tok):
    exs = [tokenize_conversation(tok, c, 512) for c in
           (CONV, [{"role": "user", "content": "a much longer question here"}, {"role": "assistant", "content": "ok"}])]
    b = pad_batch(exs, tok.pad_token_id)
    C = b.loss_mask.shape[1]
    for row, ex in enumerate(exs):
        got = [int(t) for t, m in zip(b.input_ids[row, -C:], b.loss_mask[row], strict=False) if m]
        want = [t for t, m in zip(ex.input_ids, ex.loss_mask, strict=False) if m]
        assert got == want


@pytest.mark.parametrize("packing", [False, True])
def test_tiny_sft_run_loss_falls(tiny_model_dir, tmp_path, packing):
    convs = [[{"role": "user", "content": f"repeat {w}"}, {"role": "assistant", "content": w}]
             for w in ("apple", "river", "stone", "cloud") * 8]
    cfg = SFTConfig(data="x", model=tiny_model_dir, lr=1e-2, batch_size=8, micro_batch_size=4, max_steps=20, epochs=100,
                    warmup_steps=2, output_dir=str(tmp_path), packing=packing, max_length=256, save_every=10)
    SFTTrainer(convs, tiny_model_dir, cfg).train()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 20
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    assert (tmp_path / "final" / "config.json").is_file() and (tmp_path / "loss_curve.png").is_file()
    AutoModelForCausalLM.from_pretrained(tmp_path / "final")


def test_sft_resume_equals_uninterrupted(tiny_model_dir, tmp_path):
    convs = [[{"role": "user", "content": f"repeat {i}"}, {"role": "assistant", "content": str(i)}] for i in range(16)]

    def cfg(out, steps, resume=False):
        return SFTConfig(data="x", model=tiny_model_dir, lr=1e-2, batch_size=4, micro_batch_size=4, max_steps=steps,
                         epochs=5, warmup_steps=1, output_dir=str(out), save_every=2, resume=resume,
                         lr_schedule="constant")

    a = SFTTrainer(convs, tiny_model_dir, cfg(tmp_path / "a", 4))
    a.train()
    SFTTrainer(convs, tiny_model_dir, cfg(tmp_path / "b", 2)).train()
    b = SFTTrainer(convs, tiny_model_dir, cfg(tmp_path / "b", 4, resume=True))
    b.train()
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=False):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)


def test_sft_data_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"text": "no columns"}\n')
    with pytest.raises(DatasetError, match="row 1"):
        load_sft_rows(str(bad))
    bad.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    with pytest.raises(DatasetError, match="line 2"):
        load_sft_rows(str(bad))


def test_cli_sft_from_file(tiny_model_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                      {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(8)))
    r = subprocess.run([sys.executable, "-m", "verity", "sft", str(data), "-m", tiny_model_dir, "--batch-size", "4",
                        "--max-steps", "2", "-o", str(tmp_path / "out"), "--lora-rank", "4"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "final" / "config.json").is_file()
    r = subprocess.run([sys.executable, "-m", "verity", "sft", str(tmp_path / "missing.jsonl"), "-m", tiny_model_dir],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "missing.jsonl" in r.stderr and "Traceback" not in r.stderr


def test_cli_sft_from_env_needs_no_data_argument(tiny_model_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "verity", "sft", "--from-env", "reverse-text", "-a",
                        '{"num_train_examples": 8}', "-m", tiny_model_dir, "--batch-size", "4", "--max-steps", "1",
                        "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-1500:]
    r = subprocess.run([sys.executable, "-m", "verity", "sft", "-m", tiny_model_dir], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "--from-env" in r.stderr and "Traceback" not in r.stderr
