"""LoRA hot reload for ``verity serve``: vLLM's ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``.

vLLM (with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) takes
``{"lora_name": NAME, "lora_path": DIR}`` and afterwards serves requests whose ``model`` is NAME
with that PEFT adapter. ``verity serve`` accepts the same requests and serves one adapter at a
time: loading merges ``W = W0 + (alpha / r) · B A`` (``alpha / sqrt(r)`` with rsLoRA) into the
served weights, computed from a copy of the base weights ``W0`` kept on the first load, so
repeated loads never accumulate; unloading restores ``W0``. A load is applied between
generation batches by the caller (the trainer syncs weights while no request is in flight).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

# peft's key for a LoRA factor: base_model.model.<module path>.lora_A.weight
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<mod>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


class AdapterError(ValueError):
    """An adapter folder that cannot be applied (missing files, unknown modules, shapes)."""


def lora_deltas(model: Any, adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """``{weight name of model: (alpha / r) · B @ A}`` for a PEFT LoRA adapter folder."""
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    cfg_file, weights = d / "adapter_config.json", d / "adapter_model.safetensors"
    if not cfg_file.is_file() or not weights.is_file():
        raise AdapterError(f"{d}: not a LoRA adapter folder (needs adapter_config.json and adapter_model.safetensors)")
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{d}: peft_type {cfg.get('peft_type')!r}, only LORA adapters can be loaded")
    r, alpha = int(cfg["r"]), float(cfg.get("lora_alpha") or cfg["r"])
    scale = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in load_file(str(weights)).items():
        m = _KEY.match(k)
        if m is None:
            raise AdapterError(f"{weights}: unexpected tensor {k!r} (only LoRA A/B factors are supported)")
        factors.setdefault(m["mod"], {})[m["ab"]] = v
    params = dict(model.named_parameters())
    out = {}
    for mod, ab in factors.items():
        name = mod + ".weight"
        if name not in params or set(ab) != {"A", "B"}:
            raise AdapterError(f"{d}: adapter module {mod!r} does not match the served model")
        delta = (ab["B"].float() @ ab["A"].float()) * scale
        if delta.shape != params[name].shape:
            raise AdapterError(f"{d}: {mod} has shape {tuple(delta.shape)}, the model {tuple(params[name].shape)}")
        out[name] = delta
    return out


class AdapterSlot:
    """The one adapter a ``verity serve`` model carries: its name, and the base weights to undo it."""

    def __init__(self, model: Any):
        self.model = model
        self.name: str | None = None
        self._base: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def load(self, name: str, path: str | Path) -> None:
        """Merge the adapter at ``path`` into the served weights, replacing any loaded one."""
        deltas = lora_deltas(self.model, path)  # validates everything before a weight changes
        params = dict(self.model.named_parameters())
        self._restore()
        for k, delta in deltas.items():
            p = params[k]
            self._base[k] = p.detach().clone()
            p.copy_((self._base[k].float() + delta.to(p.device)).to(p.dtype))
        self.name = name

    @torch.no_grad()
    def unload(self) -> None:
        self._restore()
        self.name = None

    def _restore(self) -> None:
        params = dict(self.model.named_parameters())
        for k, w in self._base.items():
            params[k].copy_(w)
        self._base.clear()
