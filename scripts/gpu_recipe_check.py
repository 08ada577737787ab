"""GPU recipe check: the notebook's RL recipe on a Qwen3-1.7B-sized model, two steps, save, resume.

A random-init model with Qwen3-1.7B's published config (28 layers, hidden 2048, vocabulary
151,936; fp32 master weights, bf16 autocast and a bf16 sampling copy) and a Qwen3-style
tokenizer (Qwen3's special tokens and chat template over a BPE vocabulary trained on the
pii-masking corpus, so prompts have realistic lengths) run the recipe — LoRA 32, 8 × 32
rollouts, 512 completion tokens, pii-masking — for two RL steps with micro-batch, decode batch
and gradient checkpointing left to ``auto``. The run is saved, a fresh trainer resumes it for a
third step (it must start from step 2), and the script prints and writes (JSON):

- peak GPU memory (``torch.cuda.max_memory_allocated``) next to the memory plan ``--dry-run``
  prints for the same settings;
- seconds per step, split into generation and training;
- the auto choices and whether the resume started from step 2.

``--device cpu --small`` runs the same path with a tiny model in seconds
(tests/test_gpu_scripts.py), so the script is known to work before GPU time is spent on it.

Usage: ``python scripts/gpu_recipe_check.py [--out FILE]`` (default ``$OUT/gpu_recipe_check.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RECIPE = dict(group_size=8, groups_per_batch=32, max_tokens=512, lora_rank=32)
SMALL = dict(group_size=4, groups_per_batch=2, max_tokens=12, lora_rank=4)


def qwen3_style_tokenizer(vocab_size: int) -> Any:
    """Qwen3's special tokens, EOS ``<|im_end|>``, pad ``<|endoftext|>`` and chat template over a
    byte-level BPE trained on the pii-masking corpus (a few seconds)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from verity.envs.pii_masking import tokenizer_corpus
    from verity.models.toy import QWEN3_ADDED, QWEN3_CHAT_TEMPLATE, QWEN3_SPECIAL

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN3_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN3_ADDED])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = QWEN3_CHAT_TEMPLATE
    return fast


def build_model(small: bool, device: str, tok: Any) -> Any:
    """Random init (seed 0, so a resumed run has the same base weights), fp32 master weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from verity.models.toy import qwen3_1_7b_config, toy_config

    cfg = toy_config("qwen3", vocab_size=len(tok)) if small else qwen3_1_7b_config()
    cfg.eos_token_id, cfg.pad_token_id = tok.eos_token_id, tok.pad_token_id
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval()


def distinct_characters(completion: Any, **_: Any) -> float:
    """Distinct characters in the completion / 100: a random-init model's rollouts all score ~0 on
    pii-masking's rewards, so without this small extra reward no group would have a signal and no
    training step (the memory this check is about) would run."""
    text = completion if isinstance(completion, str) else " ".join(str(m.get("content", "")) for m in completion)
    return len(set(text)) / 100


def rl_config(run_dir: Path, small: bool, steps: int, resume: bool) -> Any:
    from verity.train.config import RLConfig

    fields = {f.name for f in dataclasses.fields(RLConfig)}
    extra = {"chat_template_kwargs": '{"enable_thinking": false}'} if "chat_template_kwargs" in fields else {}
    return RLConfig(env="pii-masking", model="qwen3-1.7b-config-random-init", **(SMALL if small else RECIPE),
                    steps=steps, save_every=2, output_dir=str(run_dir), seed=0, resume=resume,
                    overwrite=not resume, lr=1e-5, **extra)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from verity.envs.registry import load_environment
    from verity.train.rl import RLTrainer

    cuda = args.device.startswith("cuda")
    t_start = time.perf_counter()
    tok = qwen3_style_tokenizer(512 if args.small else 16384)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="gpu_recipe_"))
    env = load_environment("pii-masking")
    env.require_rubric().add_reward_func(distinct_characters, weight=0.1)
    steps: list[dict[str, Any]] = []

    def keep(m: dict[str, Any]) -> None:
        steps.append({k: m[k] for k in ("step", "reward/mean", "loss", "time/generate", "time/score", "time/train",
                                        "completion_len/mean", "frac_zero_std", "grad_norm") if k in m})
        print(json.dumps(steps[-1]), flush=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = RLTrainer(env, (build_model(args.small, args.device, tok), tok), rl_config(run_dir, args.small, 2, False))
    mem = trainer.memory
    t0 = time.perf_counter()
    trainer.train(on_step=keep, progress=False)
    t_two = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if cuda else None
    del trainer
    if cuda:
        torch.cuda.empty_cache()
    first = len(steps)
    resumed = RLTrainer(env, (build_model(args.small, args.device, tok), tok), rl_config(run_dir, args.small, 3, True))
    resumed.train(on_step=keep, progress=False)
    resumed_steps = [s["step"] for s in steps[first:]]
    gib = 1 << 30
    out = {
        "device": torch.cuda.get_device_name() if cuda else args.device,
        "small": args.small, "settings": {**(SMALL if args.small else RECIPE), "env": "pii-masking"},
        "auto": {"micro_batch": mem.micro_batch, "decode_batch": mem.decode_batch,
                 "gradient_checkpointing": mem.checkpointing, "budget_gib": round(mem.budget / gib, 2)},
        "plan_gib": {**{k: round(v / gib, 3) for k, v in dataclasses.asdict(mem.plan).items()
                        if isinstance(v, int) and not isinstance(v, bool) and k not in ("micro_batch", "decode_batch")},
                     "total": round(mem.plan.total / gib, 3)},
        "peak_gpu_gib": None if peak is None else round(peak / gib, 3),
        "plan_over_measured": None if not peak else round(mem.plan.total / peak, 3),
        "steps": steps, "two_steps_s": round(t_two, 1),
        "s_per_step": {k: round(sum(s[f"time/{k}"] for s in steps[:first]) / max(1, first), 2)
                       for k in ("generate", "score", "train")},
        "resumed_steps": resumed_steps, "resume_ok": resumed_steps == [3],
        "trained_every_step": all(s.get("frac_zero_std", 1.0) < 1.0 for s in steps),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    print("memory plan (as --dry-run prints it):")
    print("\n".join(mem.lines()))
    if peak is not None:
        print(f"measured peak GPU memory: {peak / gib:.2f} GiB (plan {mem.plan.total / gib:.2f} GiB)")
    print(f"s/step: {out['s_per_step']}; resumed steps {resumed_steps}; wall {out['wall_s']} s")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The RL recipe on a Qwen3-1.7B-sized random model: 2 steps, save, resume.")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--small", action="store_true", help="a tiny model and batch (seconds on a CPU)")
    ap.add_argument("--out", help="JSON output (default: $OUT/gpu_recipe_check.json, else ./gpu_recipe_check.json)")
    ap.add_argument("--run-dir", help="run directory (default: a fresh temporary directory)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("gpu_recipe_check: error: no CUDA device (use --device cpu --small to check the script)",
                  file=sys.stderr)
            return 2
    out = run(args)
    path = Path(args.out or Path(os.environ.get("OUT", ".")) / "gpu_recipe_check.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)
    print(f"wrote {path}")
    return 0 if out["resume_ok"] and out["trained_every_step"] else 1


if __name__ == "__main__":
    sys.exit(main())
