"""Decode cases shared by tests/test_decode_syncs.py and its golden file.

``python -m tests.decode_cases OUT.json`` (from the repository root) writes the outputs of the sampler
checked out now; ``tests/data/decode_golden.json`` holds those of the decode loop before the
sync-free rewrite (commit bd689d1), so the test proves the rewrite samples the same tokens.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def cases(model_dir: str, **sampler_kw: Any) -> dict[str, Any]:
    """Completions of a tiny model for five decode settings (ids, rounded log-probs, finish reasons)."""
    import torch

    from verity.models.loading import load_model
    from verity.rollout.hf_sampler import HFSampler
    from verity.types import SamplingArgs

    out: dict[str, Any] = {}
    qs = ["mask: Jane Roe 555-0100", "hello there", "a much longer prompt with several words in it", "x",
          "call 555-0199 for Bob", "my email is a@b.c"]
    for name, dtype, amp, args, seeded in [
        ("fp32_t1_topk2", "fp32", None, SamplingArgs(max_tokens=24, temperature=1.0, seed=7, top_logprobs=2), False),
        ("fp32_top_p", "fp32", None, SamplingArgs(max_tokens=20, temperature=0.8, top_p=0.7, seed=3), False),
        ("fp32_row_seeds", "fp32", None, SamplingArgs(max_tokens=20, temperature=1.0), True),
        ("bf16_copy", "fp32", torch.bfloat16, SamplingArgs(max_tokens=24, temperature=1.0, seed=11), False),
        ("greedy", "fp32", None, SamplingArgs(max_tokens=16, temperature=0.0), False),
    ]:
        model, tok = load_model(model_dir, dtype=dtype, for_training=amp is not None)
        s = HFSampler(model, tok, batch_size=5, autocast_dtype=amp, **sampler_kw)
        s.eos_ids = sorted(set(s.eos_ids) | set(range(40, 90)))  # ~10% stop chance a token: rows finish early
        prompts = [s.render([{"role": "user", "content": q}]) for q in qs] * 2
        seeds = [100 + i for i in range(len(prompts))] if seeded else None
        comps = s.generate_ids(prompts, args, seeds=seeds)
        out[name] = [{"ids": list(c.completion_ids), "lps": [round(x, 4) for x in c.logprobs],
                      "finish": c.finish_reason, "top": [[[i, round(lp, 4)] for i, lp in alts]
                                                        for alts in c.top_logprobs]} for c in comps]
    return out


def main() -> None:
    import tempfile

    import torch

    from verity.envs.pii_masking import tokenizer_corpus
    from verity.models.tokenizer import make_tiny_model

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        d = make_tiny_model(tmp, tokenizer_corpus(), vocab_size=512, hidden_size=64, num_layers=2)
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            json.dump(cases(d), f)


if __name__ == "__main__":
    main()
