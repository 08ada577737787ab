"""Memory-frugal token log-probabilities and entropies from LM logits.

A full ``log_softmax`` over [B, T, V] logits doubles the largest activation of
an LM step (V is ~150k for modern tokenizers).  These helpers only ever
materialise one chunk of positions of one batch row at a time ([t, V] with
t·V <= ``CHUNK_ELEMENTS``), upcast to float32 for numerical safety when the
logits are bf16/fp16; nothing of size [B, T, V] is copied or kept for backward
beyond the logits themselves (and, in backward, their gradient).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["entropy_from_logits", "position_chunks", "selective_log_softmax"]

_LOW_PRECISION = (torch.bfloat16, torch.float16)

#: Elements of one float32 working chunk [t, V] (64 MiB): 441 positions of a 151,936-token
#: vocabulary, a whole row of small-vocabulary models (so their results are the unchunked ones).
CHUNK_ELEMENTS = 1 << 24


def position_chunks(T: int, V: int, elements: int | None = None) -> list[tuple[int, int]]:
    """[start, end) position ranges of at most ``max(1, elements // V)`` positions covering 0..T
    (``elements`` defaults to :data:`CHUNK_ELEMENTS`, read at call time)."""
    step = max(1, (elements or CHUNK_ELEMENTS) // max(1, V))
    return [(s, min(T, s + step)) for s in range(0, T, step)]


def _prepare_rows(rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """Upcast a chunk of logits [b, T, V] to fp32 if half precision, then divide by temperature."""
    if rows.dtype in _LOW_PRECISION:
        rows = rows.float()
    if temperature != 1.0:
        rows = rows / temperature
    return rows


def selective_log_softmax(
    logits: torch.Tensor,
    index: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log p(index) under softmax(logits / temperature), without a full log-softmax.

    Uses log softmax(x)_k = x_k - logsumexp(x), evaluated one chunk of positions
    of one batch row at a time (:func:`position_chunks`), so peak extra memory is
    one chunk's [t, V] (in fp32) rather than [B, T, V].  Same trick as TRL's ``selective_log_softmax``.  The policy
    log-probability log pi_theta(o_t | q, o_<t) enters every ratio in
    Schulman et al. 2017 (PPO, eq. 6) and Shao et al. 2024 (GRPO, eq. 3).

    Args:
        logits: [B, T, V] float logits (fp32, bf16 or fp16).
        index: [B, T] int64 token ids whose log-prob is wanted.
        temperature: sampling temperature; logits are divided by it first so
            that log-probs match the distribution the tokens were sampled from.

    Returns:
        [B, T] log-probs; float32 when ``logits`` is bf16/fp16, else ``logits.dtype``.
        Differentiable w.r.t. ``logits``.
    """
    if logits.dim() != 3 or index.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and index [B, T], got {tuple(logits.shape)} and {tuple(index.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.shape[0] == 0:
        dtype = torch.float32 if logits.dtype in _LOW_PRECISION else logits.dtype
        return logits.new_zeros(index.shape, dtype=dtype)
    return _SelectiveLogSoftmax.apply(logits, index, temperature)  # [B, T]


class _SelectiveLogSoftmax(torch.autograd.Function):
    """:func:`selective_log_softmax` one chunk of positions of one batch row at a time, in forward
    and in backward (each position's log-softmax depends on its own logits only, so chunking does
    not change any value).

    Left to autograd, the per-row code keeps a float32 copy of every row for backward
    (B·T·V·4 bytes) and builds one zero-filled [B, T, V] gradient per row, summed into the
    gradient of ``logits``. Here backward keeps only ``logits`` itself and the per-token
    logsumexp, recomputes each row's float32 copy, and writes all rows into one gradient
    tensor. The operations and their order are autograd's own (gather → scatter_add,
    logsumexp → ``grad · exp(x − lse)``, the sum of both, ÷ temperature, cast, accumulate),
    so the gradient has the same bits; ``tests/test_algos.py`` compares the two.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, index: torch.Tensor, temperature: float) -> torch.Tensor:
        B = logits.shape[0]
        dtype = torch.float32 if logits.dtype in _LOW_PRECISION else logits.dtype
        out = logits.new_empty(index.shape, dtype=dtype)  # [B, T]
        lse = logits.new_empty(index.shape, dtype=dtype)  # [B, T]
        chunks = position_chunks(logits.shape[1], logits.shape[2])
        for b in range(B):
            for s, e in chunks:
                row = _prepare_rows(logits[b, s:e], temperature)  # [t, V]
                chosen = row.gather(-1, index[b, s:e].unsqueeze(-1)).squeeze(-1)  # [t]
                lse[b, s:e] = torch.logsumexp(row, dim=-1)
                out[b, s:e] = chosen - lse[b, s:e]
        ctx.save_for_backward(logits, index, lse)
        ctx.temperature = temperature
        return out

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (grad,) = grad_outputs  # [B, T]: d loss / d log-prob of each chosen token
        logits, index, lse = ctx.saved_tensors
        T = ctx.temperature
        B = logits.shape[0]
        grad_logits = torch.zeros_like(logits)  # [B, T, V]
        chunks = position_chunks(logits.shape[1], logits.shape[2])
        for b in range(B):
            for s, e in chunks:
                row = _prepare_rows(logits[b, s:e], T)  # [t, V], recomputed: the same bits as in forward
                g = grad[b, s:e].unsqueeze(-1)  # [t, 1]
                d = torch.zeros_like(row).scatter_add_(-1, index[b, s:e].unsqueeze(-1), g) \
                    + (-g) * (row - lse[b, s:e].unsqueeze(-1)).exp()  # [t, V]
                if T != 1.0:
                    d = d / T
                d = d.to(logits.dtype)
                if B == 1:
                    grad_logits[b, s:e] = d
                else:  # autograd sums the rows' zero-padded gradients: x + 0 (which turns -0 into +0)
                    grad_logits[b, s:e] += d
        return grad_logits, None, None


def entropy_from_logits(
    logits: torch.Tensor,
    chunk_size: int = 1,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token entropy H = -sum_v p_v log p_v of softmax(logits / temperature).

    Computed ``chunk_size`` batch rows at a time, and within them at most
    ``CHUNK_ELEMENTS // (chunk_size·V)`` positions at a time, so peak extra memory is
    a few float32 copies of one such chunk, never of [B, T, V].  Used for monitoring (entropy collapse,
    Cui et al. 2025 "The Entropy Mechanism of RL for Reasoning LMs") and for
    an optional entropy bonus (Williams & Peng 1991; Mnih et al. 2016, A3C
    sec. 4).

    Args:
        logits: [B, T, V] float logits.
        chunk_size: batch rows per chunk (>= 1).
        temperature: logits are divided by it first.

    Returns:
        [B, T] entropies (nats); float32 for bf16/fp16 input, else ``logits.dtype``.
    """
    if logits.dim() != 3:
        raise ValueError(f"expected logits [B, T, V], got shape {tuple(logits.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    B, T, V = logits.shape
    dtype = torch.float32 if logits.dtype in _LOW_PRECISION else logits.dtype
    out = logits.new_zeros((B, T), dtype=dtype)
    for start in range(0, B, chunk_size):
        for s, e in position_chunks(T, V * min(chunk_size, B - start)):
            rows = _prepare_rows(logits[start : start + chunk_size, s:e], temperature)  # [b, t, V]
            logp = torch.log_softmax(rows, dim=-1)  # [b, t, V]
            out[start : start + chunk_size, s:e] = -(logp.exp() * logp).sum(dim=-1)  # [b, t]
    return out  # [B, T]
