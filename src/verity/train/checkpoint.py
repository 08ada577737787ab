"""Atomic checkpoints: weights (LoRA adapter or full model), optimizer, scheduler, RNG, trainer state;
and the one merge of a run into a plain HF model directory (:func:`save_merged`, :func:`merge_run`).

A checkpoint is written into a temporary directory and renamed into place, then the
``latest`` pointer is replaced atomically, so a kill at any moment leaves the previous
checkpoint intact and ``latest`` always names a complete one.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from verity.errors import VerityError
from verity.utils import atomic_write_json, atomic_write_text


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def save_checkpoint(run_dir: str | Path, step: int, model: Any, learner_state: dict[str, Any],
                    trainer_state: dict[str, Any], keep: int = 2, tokenizer: Any = None) -> Path:
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:06d}"
    tmp = ckpt_root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None and not _is_peft(model):
        tokenizer.save_pretrained(tmp)
    torch.save(learner_state, tmp / "optimizer.pt")
    torch.save({"python": random.getstate(), "torch": torch.get_rng_state()}, tmp / "rng.pt")
    atomic_write_json(tmp / "trainer_state.json", {**trainer_state, "step": step, "peft": _is_peft(model)})
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    atomic_write_text(run_dir / "checkpoints" / "latest", final.name + "\n")
    _prune(ckpt_root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    ckpts = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    ptr = root / "latest"
    if ptr.is_file():
        p = root / ptr.read_text().strip()
        if (p / "trainer_state.json").is_file():
            return p
    ckpts = sorted(p for p in root.glob("step_*") if (p / "trainer_state.json").is_file())
    return ckpts[-1] if ckpts else None


def load_weights(model: Any, ckpt: Path) -> None:
    """Load checkpoint weights into ``model`` (adapter weights into a PEFT model, else the full model)."""
    from safetensors.torch import load_file

    if _is_peft(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
    else:
        state = {}
        for f in sorted(ckpt.glob("*.safetensors")):
            state.update(load_file(str(f)))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if "lm_head" not in m]  # tied embeddings are not stored twice
        if missing or unexpected:
            raise RuntimeError(
                f"checkpoint {ckpt} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")


def load_checkpoint(ckpt: Path, model: Any, learner: Any) -> dict[str, Any]:
    """Restore weights, optimizer/scheduler and RNG states; returns the trainer state."""
    load_weights(model, ckpt)
    learner.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    rng = torch.load(ckpt / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    return json.loads((ckpt / "trainer_state.json").read_text())


def save_merged(model: Any, tokenizer: Any, out_dir: str | Path, dtype: torch.dtype | None = None,
                copy_model: bool = True) -> Path:
    """Save a plain HF model directory with the tokenizer and chat template: LoRA adapters are merged
    into the base weights (on a copy unless ``copy_model`` is False), then cast to ``dtype`` if given."""
    if hasattr(model, "merge_and_unload"):
        if copy_model:
            import copy

            model = copy.deepcopy(model)
        model = model.merge_and_unload()
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def merge_run(run_dir: str, out_dir: str, checkpoint: str | None = None) -> Path:
    """Merge (or, for full fine-tunes, copy) a run's checkpoint into ``out_dir`` as a float32 HF model."""
    from verity.models.loading import load_model

    run = Path(run_dir)
    manifest = run / "manifest.json"
    if not manifest.is_file():
        raise VerityError(f"{run_dir}: no manifest.json (not a verity run directory?)")
    base = json.loads(manifest.read_text())["base_model"]
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(run)
    if ckpt is None or not (ckpt / "trainer_state.json").is_file():
        raise VerityError(f"{checkpoint or run_dir}: no checkpoint found")
    model, tok = load_model(base, dtype="fp32", device="cpu", for_training=True)
    if (ckpt / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ckpt))
    else:
        load_weights(model, ckpt)
    return save_merged(model, tok, out_dir, dtype=torch.float32, copy_model=False)
