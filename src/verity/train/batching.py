"""Rollouts -> padded tensors for the learner.

Layout ("prompt-left, completion-right"): each row is ``[pad… prompt | completion …pad]``,
so every completion starts at the same column P. The model then computes LM-head logits
only for the last C+1 positions (``logits_to_keep``), never for the prompt, which on small
models with long system prompts is most of the compute of the head.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

import torch

from verity.types import Batch, Rollout


def pack_rows(prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[int]],
              masks: Sequence[Sequence[float]], logprobs: Sequence[Sequence[float]], advantages: Sequence[float],
              pad_id: int) -> Batch:
    """The shared layout: row b = ``[pad… prefixes[b] | suffixes[b] …pad]``.

    Shapes: input_ids/attention_mask [B, P+C]; loss_mask/sampler_logprobs [B, C] over the suffix
    columns (``masks[b]``/``logprobs[b]`` may be empty: all-ones mask, zero log-probs).
    """
    B = len(prefixes)
    P = max(len(p) for p in prefixes)
    C = max(max(len(c) for c in suffixes), 1)
    input_ids = torch.full((B, P + C), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + C), dtype=torch.long)
    loss_mask = torch.zeros((B, C), dtype=torch.float32)
    sampler_lp = torch.zeros((B, C), dtype=torch.float32)
    for b, (pre, suf) in enumerate(zip(prefixes, suffixes, strict=False)):
        p, c = len(pre), len(suf)
        input_ids[b, P - p:P] = torch.tensor(list(pre), dtype=torch.long)
        attn[b, P - p:P] = 1
        if c:
            input_ids[b, P:P + c] = torch.tensor(list(suf), dtype=torch.long)
            attn[b, P:P + c] = 1
            loss_mask[b, :c] = torch.tensor(list(masks[b]) or [1.0] * c, dtype=torch.float32)
            if logprobs[b]:
                sampler_lp[b, :c] = torch.tensor(list(logprobs[b]), dtype=torch.float32)
    return Batch(input_ids=input_ids, attention_mask=attn, loss_mask=loss_mask, sampler_logprobs=sampler_lp,
                 advantages=torch.tensor(list(advantages), dtype=torch.float32),
                 num_tokens=int(loss_mask.sum().item()))


def make_batch(rollouts: Sequence[Rollout], advantages: Sequence[float], pad_id: int,
               mask_truncated: bool = False) -> Batch:
    """Pack rollouts into a :class:`Batch` (shapes: input_ids [B, P+C], loss_mask [B, C])."""
    masks = [[0.0] * len(r.completion_ids) if mask_truncated and r.truncated
             else (r.completion_mask or [1.0] * len(r.completion_ids)) for r in rollouts]
    return pack_rows([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts], masks,
                     [r.completion_logprobs for r in rollouts], advantages, pad_id)


def split_batch(batch: Batch, size: int) -> list[Batch]:
    """Micro-batches of at most ``size`` rows, trimmed of all-padding columns."""
    out = []
    for s in range(0, batch.input_ids.shape[0], size):
        sl = slice(s, s + size)
        attn = batch.attention_mask[sl]
        lm = batch.loss_mask[sl]
        C = batch.loss_mask.shape[1]
        P = batch.input_ids.shape[1] - C
        cols = attn.any(0)
        first = int(cols[:P].float().argmax()) if bool(cols[:P].any()) else P - 1
        last_c = int(torch.nonzero(attn[:, P:].any(0)).max()) + 1 if bool(attn[:, P:].any()) else 1
        out.append(Batch(
            input_ids=batch.input_ids[sl, first:P + last_c], attention_mask=attn[:, first:P + last_c],
            loss_mask=lm[:, :last_c], sampler_logprobs=batch.sampler_logprobs[sl, :last_c],
            advantages=batch.advantages[sl], num_tokens=int(lm.sum().item()),
            old_logprobs=None if batch.old_logprobs is None else batch.old_logprobs[sl, :last_c],
        ))
    return out


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The seeded shuffle of ``range(n)`` for one epoch, a pure function of (n, seed, epoch) so that
    resume is exact; cached because training reads it once per example."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def step_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The rows of ``step`` when an epoch-based trainer takes ``batch_size`` rows per step from the
    per-epoch shuffles of ``range(n)`` (:func:`epoch_order`): a pure function of its arguments."""
    return [epoch_order(n, seed, j // n)[j % n] for j in range(step * batch_size, (step + 1) * batch_size)]
