"""Model FLOPs utilisation of verity's GRPO training phase, against this machine's measured matmul peak.

1. Peak: best-of-``--repeats`` GFLOP/s of a ``--size``² × ``--size``² matmul (2·n³ FLOPs) in fp32
   and in bf16, on all of torch's threads (``torch.get_num_threads()``).
2. verity: the ``medium`` GRPO config of :mod:`benchmarks.grpo_vs_trl` (hidden 512, 8 layers,
   32 completions × 64 tokens, full fine-tune, verity's default dtype). For each timed step,
   training FLOPs = 6 · params · tokens, where tokens = the non-padding prompt+completion tokens
   the training forward processes (counted by wrapping the learner's ``forward_backward``), and
   MFU = FLOPs / ``time/train`` / peak. Generation is reported too, as 2 · params · completion
   tokens / ``time/generate`` (a decode-bound lower figure).

6·N·T is the usual dense-transformer estimate; it ignores attention's T² term (small at these
lengths) and over-counts verity slightly, which computes LM-head logits only for completion
positions. MFU is given against the peak of the dtype verity actually computes in.

    python -m benchmarks.mfu [--steps N] [--json]

Smoke test: ``--steps 1 --hidden 64 --layers 1 --completions 16 --max-tokens 8 --size 256``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from benchmarks.common import CONFIGS, GRPOBench, machine_info, median, num_params
from verity.utils import peak_rss_mb


def matmul_peak(dtype_name: str, n: int = 2048, repeats: int = 5, inner: int = 3) -> dict[str, float]:
    """Best GFLOP/s over ``repeats`` timings of ``inner`` back-to-back n×n matmuls."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    c = torch.empty(n, n, dtype=dtype)
    torch.matmul(a, b, out=c)  # warm-up (allocations, kernel choice)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b, out=c)
        best = min(best, (time.perf_counter() - t0) / inner)
    return {"gflops": 2 * n**3 / best / 1e9, "best_s": best, "size": n, "threads": torch.get_num_threads()}


def verity_phase_flops(cfg: GRPOBench, warmup: int, steps: int) -> dict[str, Any]:
    """Run verity's trainer on ``cfg``; per-step training and generation throughput in GFLOP/s."""
    from benchmarks.grpo_vs_trl import time_verity, verity_trainer

    trainer, model = verity_trainer(cfg, warmup + steps)
    n = num_params(model)
    recs = time_verity(trainer, warmup, steps)
    dtype = trainer.learner.autocast_dtype
    train_gflops = [6 * n * r["train_tokens"] / r["train"] / 1e9 for r in recs]
    gen_gflops = [2 * n * r["completion_tokens"] / r["generate"] / 1e9 for r in recs]
    return {
        "params": n, "compute_dtype": "bf16" if dtype is not None and "bfloat16" in str(dtype) else "fp32",
        "train_tokens_per_step": median([r["train_tokens"] for r in recs]),
        "train_tokens_padded_per_step": median([r["train_tokens_padded"] for r in recs]),
        "time_train_s": median([r["train"] for r in recs]), "time_generate_s": median([r["generate"] for r in recs]),
        "s_per_step": median([r["wall"] for r in recs]),
        "train_gflops": median(train_gflops), "generate_gflops": median(gen_gflops),
        "timed_steps": len(recs), "peak_rss_mb": peak_rss_mb(),
    }


def compute(a: argparse.Namespace) -> dict[str, Any]:
    base = CONFIGS[a.config]
    cfg = GRPOBench(base.name, a.hidden or base.hidden, a.layers or base.layers, a.completions or base.completions,
                    a.max_tokens or base.max_tokens, base.group_size, base.lr, base.heads)
    peaks = {d: matmul_peak(d, a.size, a.repeats) for d in ("fp32", "bf16")}
    v = verity_phase_flops(cfg, a.warmup, a.steps)
    own = peaks[v["compute_dtype"]]["gflops"]
    return {
        "config": cfg.as_dict(), "peak_gflops": {d: p["gflops"] for d, p in peaks.items()}, "peaks": peaks,
        "verity": v,
        "mfu_train": v["train_gflops"] / own,
        "mfu_train_vs_fp32_peak": v["train_gflops"] / peaks["fp32"]["gflops"],
        "mfu_train_vs_bf16_peak": v["train_gflops"] / peaks["bf16"]["gflops"],
        "mfu_generate": v["generate_gflops"] / own,
        "machine": machine_info(),
    }


def print_report(r: dict[str, Any]) -> None:
    v, p = r["verity"], r["peak_gflops"]
    print(f"matmul peak ({r['peaks']['fp32']['size']}², {r['peaks']['fp32']['threads']} threads): "
          f"fp32 {p['fp32']:.1f} GFLOP/s, bf16 {p['bf16']:.1f} GFLOP/s")
    print(f"verity {r['config']['name']} ({v['params'] / 1e6:.1f}M params, compute {v['compute_dtype']}): "
          f"{v['train_tokens_per_step']:.0f} train tokens/step ({v['train_tokens_padded_per_step']:.0f} padded), "
          f"time/train {v['time_train_s']:.3f} s -> {v['train_gflops']:.1f} GFLOP/s")
    print(f"MFU (training phase) = {100 * r['mfu_train']:.1f}% of the {v['compute_dtype']} peak "
          f"({100 * r['mfu_train_vs_fp32_peak']:.1f}% of fp32, {100 * r['mfu_train_vs_bf16_peak']:.1f}% of bf16)")
    print(f"generation: {v['generate_gflops']:.1f} GFLOP/s = {100 * r['mfu_generate']:.1f}% of peak "
          f"(time/generate {v['time_generate_s']:.3f} s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mfu", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=list(CONFIGS), default="medium")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--size", type=int, default=2048, help="matmul size for the peak")
    p.add_argument("--repeats", type=int, default=5, help="matmul timings; the best counts")
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    for flag in ("--hidden", "--layers", "--completions", "--max-tokens"):
        p.add_argument(flag, type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    r = compute(a)
    if not a.json:
        print_report(r)
    print(json.dumps(r, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
