"""Rows joining a running decode batch (continuous batching for ``verity serve``).

The batch's KV cache is one timeline of columns shared by all rows (left padding): row ``r``'s
tokens occupy columns ``first[r] .. n - 1`` of every layer's preallocated buffer
(:class:`~verity.rollout.hf_sampler` ``PreallocLayer``), and the attention mask marks them. A
joining prompt of length ``p`` is prefilled on its own and its keys/values are copied so that they
end at the current column ``n``, like a left-padded row of the batch. Before that the timeline is
re-based: columns no row uses any more (before ``min(first)``) are dropped, and when the joining
prompt is longer than the timeline the existing rows are shifted right. Positions are per row, so
a row's RoPE phases do not depend on where its columns lie.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def can_join(cache: Any) -> bool:
    """Whether every layer of ``cache`` is a preallocated buffer that rows can be added to."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(hasattr(layer, "_k") for layer in layers)


def join_rows(model: Any, st: dict[str, Any], prompts: Sequence[Sequence[int]], T: int, pad_id: int) -> Any:
    """Prefill ``prompts`` and add them to the batch state ``st`` (``past``, ``attn``, ``pos``, ``n``,
    ``first``); return their next-token logits [a, V]. Each joining row has room for ``T`` tokens."""
    import torch

    dev = st["attn"].device
    a, Pn = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((a, Pn), pad_id, dtype=torch.long)
    mask = torch.zeros((a, Pn), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, Pn - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, Pn - len(p):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    new_cache = getattr(out, "cache", None) or out.past_key_values
    n, first = st["n"], st["first"]
    lo = min(first) if first else n  # columns before lo hold no live row's tokens
    used = n - lo
    new_n = max(used, Pn)
    shift = new_n - used  # extra left padding for the rows already in the batch
    cap = max(st["attn"].shape[1] - lo + shift, new_n + T)
    b = st["attn"].shape[0]
    for layer, fresh in zip(st["past"].layers, new_cache.layers, strict=True):
        layer._k = _place(layer._k, fresh.keys, lo, n, shift, new_n, cap)
        layer._v = _place(layer._v, fresh.values, lo, n, shift, new_n, cap)
        layer._n = new_n
        layer._view()
    attn = torch.zeros((b + a, cap), dtype=st["attn"].dtype, device=dev)
    attn[:b, shift:new_n] = st["attn"][:, lo:n]
    attn[b:, new_n - Pn:new_n] = mask
    attn[:, new_n:] = 1
    st["attn"], st["n"] = attn, new_n
    st["pos"] = torch.cat([st["pos"], pos[:, -1:]])
    st["first"] = [f - lo + shift for f in first] + [new_n - len(p) for p in prompts]
    return out.logits[:, -1]


def _place(old: Any, fresh: Any, lo: int, n: int, shift: int, new_n: int, cap: int) -> Any:
    """[b + a, H, cap, D]: the old rows' columns lo..n at shift.., the fresh rows ending at new_n."""
    b, H, _, D = old.shape
    a, Pn = fresh.shape[0], fresh.shape[2]
    buf = old.new_zeros(b + a, H, cap, D)
    buf[:b, :, shift:new_n] = old[:, :, lo:n]
    buf[b:, :, new_n - Pn:new_n] = fresh
    return buf
