"""The memory plan: parameter counts against real models, auto choices within the budget, --dry-run."""

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch

from verity.errors import ConfigError
from verity.train.memory import (
    HEADROOM,
    GiB,
    MiB,
    ModelShape,
    memory_budget,
    pick_decode_batch,
    pick_micro_batch,
    plan_memory,
    resolve_settings,
)


def _qwen3_1_7b():
    from verity.models.toy import qwen3_1_7b_config

    return qwen3_1_7b_config()


def test_parameter_counts_match_built_models():
    """Parameters and LoRA parameters counted from the config equal those of the models built from it
    (Qwen3-1.7B on the meta device: no memory; a toy Llama with untied embeddings for real)."""
    from transformers import AutoModelForCausalLM

    from verity.models.toy import tiny_model
    from verity.train.learner import add_lora

    cfg = _qwen3_1_7b()
    with torch.device("meta"):
        big = AutoModelForCausalLM.from_config(cfg)
    assert ModelShape.from_config(cfg.to_dict()).params == sum(p.numel() for p in big.parameters())
    for arch in ("qwen3", "llama"):
        m = tiny_model(arch)
        shape = ModelShape.from_config(m.config.to_dict())
        assert shape.params == sum(p.numel() for p in m.parameters())
        lora = add_lora(m, 4)
        assert shape.lora_params(4) == sum(p.numel() for p in lora.parameters() if p.requires_grad)


def test_plan_of_the_recipe_on_qwen3_1_7b():
    """Hand-checked parts for Qwen3-1.7B, LoRA 32, 8 × 32 rollouts of 512 tokens after ~200-token prompts."""
    shape = ModelShape.from_config(_qwen3_1_7b().to_dict())
    p = plan_memory(shape, micro_batch=8, seq_len=712, completion_len=512, lora_rank=32, checkpointing=True,
                    decode_batch=256, decode_len=712)
    assert p.weights == 4 * shape.params and p.optimizer == 8 * shape.lora_params(32) == 2 * p.grads
    # KV: 28 layers × (K, V) × 8 heads × 128 dims × 2 bytes = 112 KiB per token
    assert shape.kv_bytes_per_token() == 28 * 2 * 8 * 128 * 2
    assert p.kv_cache == 256 * 712 * 28 * 2 * 8 * 128 * 2  # 19.5 GiB: why the decode batch needs a cap
    # logits: 8 × 513 × 151,936 bf16 = 1.16 GiB, twice (logits + gradient) + three 64 MiB fp32 chunks
    assert p.logits == 2 * 8 * 513 * 151936 * 2 + 3 * (1 << 26)
    no_ckpt = plan_memory(shape, micro_batch=8, seq_len=712, completion_len=512, lora_rank=32, checkpointing=False)
    assert no_ckpt.activations > 4 * p.activations  # checkpointing is what makes 512 tokens fit


@pytest.mark.parametrize("budget_gib", [6, 12, 24, 40, 80, 141])
def test_auto_choices_never_exceed_the_budget(budget_gib):
    shape = ModelShape.from_config(_qwen3_1_7b().to_dict())
    budget = budget_gib * GiB
    kw: dict[str, Any] = dict(seq_len=712, completion_len=512, lora_rank=32, compute_bytes=2, decode_len=712)
    try:
        s = resolve_settings(shape, "cuda", micro_batch="auto", ceiling=64, decode_batch="auto", decode_ceiling=256,
                             checkpointing="auto", budget=budget, **kw)
    except ConfigError as e:  # fp32 weights (6.4 GiB) + bf16 sampling copy (3.2 GiB) leave too little: one line
        assert budget_gib <= 12 and "even 1 sequence" in str(e) and "\n" not in str(e)
        return
    assert budget_gib > 12
    assert s.checkpointing  # auto: on for CUDA devices
    assert s.plan.total <= HEADROOM * budget
    assert s.micro_batch == 64 or plan_memory(shape, micro_batch=s.micro_batch + 1, decode_batch=s.decode_batch,
                                              checkpointing=True, **kw).total > HEADROOM * budget
    assert s.decode_batch == 256 or plan_memory(shape, micro_batch=1, decode_batch=s.decode_batch + 1,
                                                checkpointing=True, **kw).total > HEADROOM * budget
    assert 1 <= pick_decode_batch(shape, budget, 256, micro_batch=1, checkpointing=True, **kw) <= 256
    assert pick_micro_batch(shape, budget, 64, decode_batch=0, checkpointing=True, **kw) >= s.micro_batch


def test_memory_budget_reads_the_environment(monkeypatch):
    monkeypatch.setenv("VERITY_MEMORY_BUDGET_MB", "1536")
    assert memory_budget("cpu") == 1536 * MiB
    monkeypatch.setenv("VERITY_MEMORY_BUDGET_MB", "lots")
    with pytest.raises(ConfigError, match="VERITY_MEMORY_BUDGET_MB"):
        memory_budget("cpu")
    monkeypatch.delenv("VERITY_MEMORY_BUDGET_MB")
    assert memory_budget("cpu") > 100 * MiB  # free RAM + this process


# One real step of the micro-batch chosen for a 700 MiB budget, in a fresh process: its peak
# resident memory (from before the model was built) stays within the budget.
STEP = textwrap.dedent("""
    import json, torch
    from verity.utils import return_freed_memory
    return_freed_memory()
    def rss(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
    import transformers.models.qwen3.modeling_qwen3  # the libraries' own memory is not the run's
    from transformers import AutoModelForCausalLM
    start = rss("VmRSS:")
    from verity.algos.losses import policy_loss
    from verity.models.toy import tiny_model
    from verity.train.batching import pack_rows
    from verity.train.learner import LocalLearner
    from verity.train.memory import ModelShape, memory_budget, pick_micro_batch
    shape = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=64, intermediate_size=768, vocab_size=16384)
    model = tiny_model("qwen3", **shape)
    mb = pick_micro_batch(ModelShape.from_config(model.config.to_dict()), memory_budget("cpu"), 256,
                          seq_len=512, completion_len=256, lora_rank=0, checkpointing=False, sampler=False)
    learner = LocalLearner(model, lr=1e-5, autocast_dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    batch = pack_rows([torch.randint(0, 16384, (256,), generator=g).tolist() for _ in range(mb)],
                      [torch.randint(0, 16384, (256,), generator=g).tolist() for _ in range(mb)],
                      [[]] * mb, [[]] * mb, [1.0] * mb, pad_id=0)
    fn = lambda lp, b: policy_loss(lp, lp.detach(), b.advantages, b.loss_mask, loss_type="dr_grpo",
                                   max_completion_length=256)
    for _ in range(2):
        learner.forward_backward(batch, fn)
        learner.optim_step()
    from verity.train.memory import plan_memory
    plan = plan_memory(ModelShape.from_config(model.config.to_dict()), micro_batch=mb, seq_len=512, completion_len=256,
                       lora_rank=0, checkpointing=False, sampler=False).total
    print("STEP " + json.dumps({"micro_batch": mb, "used": rss("VmHWM:") - start, "plan": plan}))
""")


def test_auto_micro_batch_step_stays_within_the_budget(tmp_path):
    env = {**__import__("os").environ, "VERITY_MEMORY_BUDGET_MB": "700"}
    p = subprocess.run([sys.executable, "-c", STEP], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=env)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("STEP ")), None)
    assert line is not None, p.stderr[-2000:]
    r = json.loads(line[5:])
    assert 1 <= r["micro_batch"] < 256  # the budget, not the ceiling, decided
    assert r["used"] <= 700 * MiB, r


def _config_only_dir(tmp_path):
    """Qwen3-1.7B's config.json and a Qwen3-style tokenizer; no weights at all."""
    from verity.models.toy import qwen3_tokenizer

    d = tmp_path / "qwen3-1.7b-config"
    _qwen3_1_7b().save_pretrained(d)
    qwen3_tokenizer().save_pretrained(d)
    return d


def test_dry_run_prints_the_plan_without_weights(tmp_path, capsys, monkeypatch):
    from verity.cli.main import main

    d = _config_only_dir(tmp_path)
    monkeypatch.setenv("VERITY_MEMORY_BUDGET_MB", str(141 * 1024))
    with pytest.raises(SystemExit) as e:
        main(["train", "pii-masking", "-m", str(d), "--dry-run", "--max-tokens", "512", "--group-size", "8",
              "--groups-per-batch", "32", "--lora-rank", "32"])
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    for part in ("weights (fp32)", "LoRA parameters", "optimizer states", "gradients", "sampling copy",
                 "KV cache", "activations", "logits", "= peak", "1.721B parameters"):
        assert part in out, part
    assert "fits: peak" in out
    with pytest.raises(SystemExit) as e:
        main(["sft", "--from-env", "pii-masking", "-m", str(d), "--dry-run"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "activations" in out and "batch 32 sequences of up to 1024 tokens" in out


def test_dry_run_and_auto_flags_bad_values(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "verity", *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)

    p = run("train", "pii-masking", "-m", str(tmp_path / "nope"), "--dry-run")
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1 and "nope" in p.stderr
    p = run("train", "pii-masking", "--micro-batch-size", "lots")
    assert p.returncode != 0 and p.stderr.strip().splitlines() == [
        "verity train: error: --micro-batch-size lots: expected a positive integer or auto"]


def test_decode_batch_cap_gives_the_unbatched_results(tiny_model_dir):
    """--max-decode-batch 2 decodes 7 prompts two at a time (its KV cache holds 2 rows, not 7) and,
    with one seed per row, samples exactly what one batch of 7 samples."""
    from verity.models.loading import load_model
    from verity.rollout.hf_sampler import HFSampler
    from verity.types import SamplingArgs

    model, tok = load_model(tiny_model_dir, dtype="fp32")
    qs = ["mask: Jane Roe 555-0100", "hello there", "a much longer prompt with several words in it", "x",
          "hello there", "y z", "mask: 555-0199"]
    args = SamplingArgs(max_tokens=10, temperature=1.0, seed=3)
    whole = HFSampler(model, tok, batch_size=64)
    ids = [whole.render([{"role": "user", "content": q}]) for q in qs]
    seeds = [11 * i + 1 for i in range(len(ids))]
    capped = HFSampler(model, tok, batch_size=2)
    decoded: list[int] = []
    orig = capped._decode
    capped._decode = lambda m, prompts, *a: decoded.append(len(prompts)) or orig(m, prompts, *a)  # type: ignore
    a, b = whole.generate_ids(ids, args, seeds), capped.generate_ids(ids, args, seeds)
    assert decoded == [2, 2, 2, 1]
    assert [c.completion_ids for c in a] == [c.completion_ids for c in b]
    for x, y in zip(a, b, strict=True):
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5)
