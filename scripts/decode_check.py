"""Decode-loop figures of ``HFSampler`` on one device: tokens/s and host syncs per decode token.

Builds a random-init model in Qwen3's architecture (``--shape qwen3-1.7b``: Qwen3-1.7B's layer
sizes with the toy Qwen3 tokenizer's vocabulary; ``qwen3-tiny`` for a smoke run), then decodes
``--batch`` rows × ``--max-tokens`` tokens (a stop id that is never sampled, so every row runs
to the end) twice per setting: host check every token (the schedule before the sync-free loop)
and every ``--check-every`` tokens (the accelerator default). On CUDA, host syncs are counted
with ``torch.cuda.set_sync_debug_mode("warn")`` (one warning per synchronising call) and the
count per decode token is printed; on a CPU there is no device to wait for and the count is "-".

    python scripts/decode_check.py --device cuda                 # ~1 min on one GPU
    python scripts/decode_check.py --device cpu --shape qwen3-tiny --batch 4 --max-tokens 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--shape", choices=("qwen3-1.7b", "qwen3-0.6b", "qwen3-tiny"), default="qwen3-1.7b")
    p.add_argument("--batch", type=int, default=64, help="rows decoded together")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--prompt-words", type=int, default=40, help="words in each prompt")
    p.add_argument("--check-every", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per setting (best kept)")
    return p.parse_args(argv)


def build(a: argparse.Namespace) -> Any:
    import torch

    from verity.models.toy import QWEN3_SHAPES, tiny_model, toy_tokenizer
    from verity.rollout.hf_sampler import HFSampler

    tok = toy_tokenizer("qwen3")
    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    with torch.device(a.device):  # initialised where it runs (a 1.7B init on the CPU takes a while)
        model = tiny_model("qwen3", tokenizer=tok, **QWEN3_SHAPES[a.shape]).eval()
    model = model.to(dtype=dtype)
    s = HFSampler(model, tok, batch_size=a.batch)
    s.eos_ids = [len(tok) + 1000]  # never sampled: every row decodes max_tokens
    return s


def run_setting(s: Any, a: argparse.Namespace, check_every: int) -> dict[str, Any]:
    import torch

    from verity.types import SamplingArgs

    s.check_every = check_every
    words = " ".join(["story"] * a.prompt_words)
    prompts = [s.render([{"role": "user", "content": f"{i}: {words}"}]) for i in range(a.batch)]
    args = SamplingArgs(max_tokens=a.max_tokens, temperature=1.0, seed=0)
    cuda = a.device.startswith("cuda")
    s.generate_ids(prompts, args.replace(max_tokens=4))  # warm-up
    best, syncs = float("inf"), None
    for _ in range(a.repeats):
        if cuda:
            torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            t0 = time.perf_counter()
            outs = s.generate_ids(prompts, args)
            dt = time.perf_counter() - t0
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
        if cuda:
            syncs = sum("synchroniz" in str(w.message) for w in caught)
        best = min(best, dt)
        assert all(len(o.completion_ids) == a.max_tokens for o in outs)
    toks = a.batch * a.max_tokens
    return {"check_every": check_every, "s": best, "tokens_per_s": toks / best,
            "ms_per_step": 1000 * best / a.max_tokens, "host_syncs": syncs,
            "syncs_per_token": None if syncs is None else syncs / a.max_tokens}


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    s = build(a)
    n = sum(p.numel() for p in s.model.parameters())
    rows = [run_setting(s, a, k) for k in (1, a.check_every)]
    print(f"{a.shape} ({n / 1e6:.0f}M params) on {a.device}: {a.batch} rows × {a.max_tokens} tokens")
    print("| check every | s | tokens/s | ms/step | host syncs | syncs/token |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        sy = "-" if r["host_syncs"] is None else str(r["host_syncs"])
        spt = "-" if r["syncs_per_token"] is None else f"{r['syncs_per_token']:.3f}"
        print(f"| {r['check_every']} | {r['s']:.2f} | {r['tokens_per_s']:.0f} | {r['ms_per_step']:.1f} | {sy} "
              f"| {spt} |")
    print(json.dumps({"shape": a.shape, "device": a.device, "params": n, "batch": a.batch,
                      "max_tokens": a.max_tokens, "settings": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
