"""Memory-frugal token log-probabilities and entropies from LM logits.

A full ``log_softmax`` over [B, T, V] logits doubles the largest activation of
an LM step (V is ~150k for modern tokenizers).  These helpers only ever
materialise one chunk of batch rows at a time (by default one row, [T, V]),
upcast to float32 for numerical safety when the logits are bf16/fp16.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["entropy_from_logits", "selective_log_softmax"]

_LOW_PRECISION = (torch.bfloat16, torch.float16)


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

    Uses log softmax(x)_k = x_k - logsumexp(x), evaluated one batch row at a
    time, so peak extra memory is one row's [T, V] (in fp32) rather than
    [B, T, V].  Same trick as TRL's ``selective_log_softmax``.  The policy
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
    """:func:`selective_log_softmax` one batch row at a time, in forward and in backward.

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
        for b in range(B):
            row = _prepare_rows(logits[b], temperature)  # [T, V]
            chosen = row.gather(-1, index[b].unsqueeze(-1)).squeeze(-1)  # [T]
            lse[b] = torch.logsumexp(row, dim=-1)
            out[b] = chosen - lse[b]
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
        for b in range(B):
            row = _prepare_rows(logits[b], T)  # [T, V], recomputed: the same bits as in forward
            g = grad[b].unsqueeze(-1)  # [T, 1]
            d = torch.zeros_like(row).scatter_add_(-1, index[b].unsqueeze(-1), g) \
                + (-g) * (row - lse[b].unsqueeze(-1)).exp()  # [T, V]
            if T != 1.0:
                d = d / T
            d = d.to(logits.dtype)
            if B == 1:
                grad_logits[b] = d
            else:  # autograd sums the rows' zero-padded gradients: x + 0 (which turns -0 into +0)
                grad_logits[b] += d
        return grad_logits, None, None


def entropy_from_logits(
    logits: torch.Tensor,
    chunk_size: int = 1,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token entropy H = -sum_v p_v log p_v of softmax(logits / temperature).

    Computed ``chunk_size`` batch rows at a time so peak extra memory is about
    ``chunk_size`` x [T, V] (fp32).  Used for monitoring (entropy collapse,
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
    out = []
    for start in range(0, logits.shape[0], chunk_size):
        rows = _prepare_rows(logits[start : start + chunk_size], temperature)  # [b, T, V]
        logp = torch.log_softmax(rows, dim=-1)  # [b, T, V]
        out.append(-(logp.exp() * logp).sum(dim=-1))  # [b, T]
    if not out:
        dtype = torch.float32 if logits.dtype in _LOW_PRECISION else logits.dtype
        return logits.new_zeros(logits.shape[:2], dtype=dtype)
    return torch.cat(out, dim=0)  # [B, T]
