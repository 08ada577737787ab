"""Atomic checkpoints: weights (LoRA adapter or full model), optimizer, scheduler, RNG, trainer state;
and the one merge of a run into a plain HF model directory (:func:`save_merged`, :func:`merge_run`).

A checkpoint is written into a temporary directory and renamed into place, then the
``latest`` pointer is replaced atomically, so a kill at any moment leaves the previous
checkpoint intact and ``latest`` always names a complete one.

Loading never runs code from the run folder: weights are safetensors, RNG and trainer state
are JSON, and the optimizer/scheduler state is read with ``torch.load(weights_only=True)``
(tensors and plain containers only) onto the CPU, so a GPU run resumes on a CPU machine.
The ``latest`` pointer must name a ``step_N`` directory inside the run folder.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from verity.errors import CheckpointError, VerityError
from verity.utils import atomic_write_json, atomic_write_text, disk_full_as_error, output_dir_path, set_file_modes

STEP_RE = re.compile(r"step_(\d+)")


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def rng_state() -> dict[str, Any]:
    """Python and torch RNG states as JSON-serialisable lists."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in cuda])


def save_checkpoint(run_dir: str | Path, step: int, model: Any, learner_state: dict[str, Any],
                    trainer_state: dict[str, Any], keep: int = 2, tokenizer: Any = None) -> Path:
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    final = ckpt_root / f"step_{step:06d}"
    tmp = ckpt_root / f".tmp_step_{step:06d}"
    with disk_full_as_error(f"checkpoint {final}"):
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None and not _is_peft(model):
            tokenizer.save_pretrained(tmp)
        torch.save(learner_state, tmp / "optimizer.pt")
        atomic_write_json(tmp / "rng.json", rng_state())
        atomic_write_json(tmp / "trainer_state.json", {**trainer_state, "step": step, "peft": _is_peft(model)})
        set_file_modes(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    atomic_write_text(ckpt_root / "latest", final.name + "\n")
    _prune(ckpt_root, keep)
    return final


def checkpoint_step(p: Path) -> int | None:
    """N for a directory named ``step_N``, else None."""
    m = STEP_RE.fullmatch(p.name)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, ordered by step number (not by name)."""
    root = Path(run_dir) / "checkpoints"
    found = [(checkpoint_step(p), p) for p in root.glob("step_*") if (p / "trainer_state.json").is_file()]
    return [p for s, p in sorted((s, p) for s, p in found if s is not None)]


def _prune(root: Path, keep: int) -> None:
    """Keep the ``keep`` highest-step checkpoints."""
    for p in list_checkpoints(root.parent)[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``checkpoints/latest`` names, else the highest complete step.

    Raises :class:`CheckpointError` when the pointer names anything but a ``step_N`` directory
    directly inside this run's ``checkpoints/`` (e.g. ``../../elsewhere``).
    """
    root = Path(run_dir) / "checkpoints"
    ptr = root / "latest"
    if ptr.is_file():
        name = ptr.read_text(encoding="utf-8", errors="replace").strip()
        p = root / name
        if checkpoint_step(Path(name)) is None or name != Path(name).name or p.resolve().parent != root.resolve():
            raise CheckpointError(f"{ptr} names {name[:80]!r}, which is not a checkpoint inside {root}; "
                                  "refusing to follow it")
        if (p / "trainer_state.json").is_file():
            return p
    ckpts = [p for p in list_checkpoints(run_dir) if p.resolve().parent == root.resolve()]
    return ckpts[-1] if ckpts else None


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt / 'trainer_state.json'}: unreadable ({e})") from None


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); the file is truncated or corrupt") \
            from None


def load_weights(model: Any, ckpt: Path) -> None:
    """Load checkpoint weights into ``model`` (adapter weights into a PEFT model, else the full model)."""
    if _is_peft(model):
        from peft import set_peft_model_state_dict

        f = ckpt / "adapter_model.safetensors"
        if not f.is_file():
            raise CheckpointError(f"{ckpt}: holds no LoRA adapter (a full fine-tune checkpoint?)")
        set_peft_model_state_dict(model, _load_file(f))
    else:
        if (ckpt / "adapter_model.safetensors").is_file():
            raise CheckpointError(f"{ckpt}: holds a LoRA adapter, but the model has no LoRA (--lora-rank 0?)")
        state = {}
        for f in sorted(ckpt.glob("*.safetensors")):
            state.update(_load_file(f))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if "lm_head" not in m]  # tied embeddings are not stored twice
        if missing or unexpected:
            raise CheckpointError(f"checkpoint {ckpt} does not match the model: missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}")


def safe_torch_load(path: Path) -> Any:
    """``torch.load`` that only reads tensors and plain containers, onto the CPU."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load, it holds more than tensors and plain data "
                              f"({str(e).splitlines()[0][:120]})") from None
    except (RuntimeError, OSError, EOFError) as e:
        raise CheckpointError(f"{path}: unreadable ({str(e).splitlines()[0][:120]})") from None


def load_checkpoint(ckpt: Path, model: Any, learner: Any) -> dict[str, Any]:
    """Restore weights, optimizer/scheduler and RNG states; returns the trainer state."""
    state = read_trainer_state(ckpt)
    load_weights(model, ckpt)
    learner.load_state_dict(safe_torch_load(ckpt / "optimizer.pt"))
    if (ckpt / "rng.json").is_file():
        set_rng_state(json.loads((ckpt / "rng.json").read_text(encoding="utf-8")))
    else:  # checkpoints written before rng.json: the same states, pickled (read with weights_only)
        rng = safe_torch_load(ckpt / "rng.pt")
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
    return state


def resume_step(run_dir: str | Path, model: Any, learner: Any) -> int:
    """``--resume``: restore the latest checkpoint of ``run_dir`` into model and learner; the step it ends."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"--resume: no checkpoint in {Path(run_dir) / 'checkpoints'}")
    return int(load_checkpoint(ckpt, model, learner)["step"])


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
    output_dir_path(out_dir)  # save_pretrained into a file logs an error and writes nothing
    with disk_full_as_error(out_dir):
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    set_file_modes(out_dir)
    return Path(out_dir)


def merge_run(run_dir: str, out_dir: str, checkpoint: str | None = None) -> Path:
    """Merge (or, for full fine-tunes, copy) a run's checkpoint into ``out_dir`` as a float32 HF model."""
    from verity.models.loading import load_model

    output_dir_path(out_dir)  # before loading anything
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
