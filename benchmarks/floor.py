"""The physical floor of one GRPO step on the machine it runs on (issue #17).

floor = training FLOPs at the measured bf16 matmul peak + decode bytes at the measured memory bandwidth:

* training: 6 · N · T_train FLOPs (N parameters, T_train the real prompt+completion tokens of
  the step's training forward) ÷ the best bf16 matmul GFLOP/s of an n×n×n product;
* decode: every decode step reads the weights once (2 bytes a parameter in bf16) and the KV
  cache of every row so far (``kv_bytes_per_pos`` · B · (P + t) at step t), ÷ the best
  bandwidth of copying a large buffer (bytes read + bytes written per second).

Prefill, scoring, the optimizer step and all framework overhead count as zero, so a real step
can only be slower; ``step ÷ floor`` says how far from the hardware a tool is.
"""

from __future__ import annotations

import time
from typing import Any


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def matmul_peak_gflops(device: str, n: int | None = None, repeats: int = 5, inner: int = 3) -> float:
    """Best bf16 GFLOP/s over ``repeats`` timings of ``inner`` back-to-back n×n matmuls on ``device``."""
    import torch

    n = n or (8192 if device.startswith("cuda") else 2048)
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    c = torch.empty(n, n, dtype=torch.bfloat16, device=device)
    torch.matmul(a, b, out=c)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b, out=c)
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best / 1e9


def bandwidth_gbs(device: str, mib: int | None = None, repeats: int = 5) -> float:
    """Best GB/s (read + write) of copying a ``mib`` MiB buffer on ``device``."""
    import torch

    mib = mib or (2048 if device.startswith("cuda") else 256)
    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best / 1e9


def step_floor(params: int, train_tokens: float, rows: int, prompt_len: float, max_tokens: int,
               kv_bytes_per_pos: int, peak_gflops: float, bw_gbs: float) -> dict[str, float]:
    """Seconds of the floor's two terms and their sum (see the module docstring)."""
    train_s = 6 * params * train_tokens / (peak_gflops * 1e9)
    kv = sum(kv_bytes_per_pos * rows * (prompt_len + t) for t in range(max_tokens))
    decode_bytes = max_tokens * 2 * params + kv
    decode_s = decode_bytes / (bw_gbs * 1e9)
    return {"train_s": train_s, "decode_s": decode_s, "floor_s": train_s + decode_s}


def kv_bytes_per_pos(hidden: int, layers: int, heads: int, kv_heads: int | None, elem: int = 2) -> int:
    """K and V of one position over all layers, in bytes (bf16 by default)."""
    return 2 * layers * (kv_heads or heads) * (hidden // heads) * elem


def child_floor(device: str) -> dict[str, Any]:
    """The measured peak and bandwidth of ``device`` (run in its own process)."""
    return {"peak_bf16_gflops": matmul_peak_gflops(device), "bandwidth_gbs": bandwidth_gbs(device), "device": device}
