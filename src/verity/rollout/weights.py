"""The sampler's low-precision copy of a training model, with LoRA adapters merged into it.

A LoRA-wrapped model samples through two extra matmuls per adapted linear layer (and about
half again as many kernel launches per decode step). The sampling copy is instead the plain base
architecture whose adapted weights hold ``W + ΔW`` (``ΔW = scaling · B A``, PEFT's
``get_delta_weight``), recomputed from the learner's fp32 weights at every sync and cast once.
"""

from __future__ import annotations

import copy
from typing import Any


def is_lora(model: Any) -> bool:
    return hasattr(model, "peft_config") and callable(getattr(model, "get_base_model", None))


def sampling_copy(model: Any, dtype: Any) -> Any:
    """A frozen ``dtype`` copy of ``model`` for sampling (a LoRA model: its base architecture, adapters merged)."""
    shadow = copy.deepcopy(model)
    if is_lora(shadow):
        shadow = shadow.merge_and_unload()
    shadow.eval()
    for p in shadow.parameters():
        p.requires_grad_(False)
        p.data = p.data.to(dtype)
    return shadow


def sync_copy(shadow: Any, model: Any) -> None:
    """Copy ``model``'s current weights into ``shadow`` (adapters merged: base weight + ΔW of the active adapters)."""
    import torch

    with torch.no_grad():
        if not is_lora(model):
            for dst, src in zip(shadow.parameters(), model.parameters(), strict=True):
                dst.copy_(src)
            return
        dst_params = dict(shadow.named_parameters())
        base = model.get_base_model()
        deltas = {f"{name}.base_layer.weight": _delta(m) for name, m in base.named_modules() if _is_lora_layer(m)}
        for name, src in base.named_parameters():
            if "lora_" in name:
                continue
            dst = dst_params[name.replace(".base_layer.", ".")]
            delta = deltas.get(name)
            dst.copy_(src if delta is None else src + delta)


def _is_lora_layer(module: Any) -> bool:
    return hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")


def _delta(module: Any) -> Any:
    """Sum of ΔW over the layer's active adapters (None when none is active or the layer is merged)."""
    if getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return None
    out = None
    for name in module.active_adapters:
        if name in getattr(module, "lora_A", {}):
            d = module.get_delta_weight(name)
            out = d if out is None else out + d
    return out
