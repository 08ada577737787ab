"""Rollouts -> padded tensors for the learner.

Layout ("prompt-left, completion-right"): each row is ``[pad… prompt | completion …pad]``,
so every completion starts at the same column P. The model then computes LM-head logits
only for the last C+1 positions (``logits_to_keep``), never for the prompt, which on small
models with long system prompts is most of the compute of the head.
"""

from __future__ import annotations

from typing import Sequence

import torch

from verity.types import Batch, Rollout


def make_batch(rollouts: Sequence[Rollout], advantages: Sequence[float], pad_id: int,
               mask_truncated: bool = False) -> Batch:
    """Pack rollouts into a :class:`Batch` (shapes: input_ids [B, P+C], loss_mask [B, C])."""
    B = len(rollouts)
    P = max(len(r.prompt_ids) for r in rollouts)
    C = max(max(len(r.completion_ids) for r in rollouts), 1)
    input_ids = torch.full((B, P + C), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + C), dtype=torch.long)
    loss_mask = torch.zeros((B, C), dtype=torch.float32)
    old_lp = torch.zeros((B, C), dtype=torch.float32)
    for b, r in enumerate(rollouts):
        p, c = len(r.prompt_ids), len(r.completion_ids)
        input_ids[b, P - p:P] = torch.tensor(r.prompt_ids, dtype=torch.long)
        attn[b, P - p:P] = 1
        if c:
            input_ids[b, P:P + c] = torch.tensor(r.completion_ids, dtype=torch.long)
            attn[b, P:P + c] = 1
            m = torch.tensor(r.completion_mask or (1,) * c, dtype=torch.float32)
            if mask_truncated and r.truncated:
                m.zero_()
            loss_mask[b, :c] = m
            if r.completion_logprobs:
                old_lp[b, :c] = torch.tensor(r.completion_logprobs, dtype=torch.float32)
    return Batch(input_ids=input_ids, attention_mask=attn, loss_mask=loss_mask, old_logprobs=old_lp,
                 advantages=torch.tensor(list(advantages), dtype=torch.float32),
                 num_tokens=int(loss_mask.sum().item()))


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
            loss_mask=lm[:, :last_c], old_logprobs=batch.old_logprobs[sl, :last_c],
            advantages=batch.advantages[sl], num_tokens=int(lm.sum().item()),
        ))
    return out
