"""``verity merge RUN_DIR -o OUT``: fold a run's LoRA adapter into its base model and save a plain HF model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from verity.errors import VerityError


def register(sub: Any) -> None:
    p = sub.add_parser("merge", help="merge a LoRA adapter into the base model and export a HF model dir")
    p.add_argument("run_dir", help="RL or SFT run directory")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the latest)")
    p.add_argument("-o", "--output-dir", required=True, help="where to write the merged model")


def merge_run(run_dir: str, out_dir: str, checkpoint: str | None = None) -> Path:
    """Merge (or, for full fine-tunes, copy) a checkpoint into ``out_dir`` with tokenizer + chat template."""
    import torch

    from verity.models.loading import load_model
    from verity.train.checkpoint import latest_checkpoint, load_weights

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

        model = PeftModel.from_pretrained(model, str(ckpt)).merge_and_unload()
    else:
        load_weights(model, ckpt)
    model = model.to(torch.float32)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return Path(out_dir)


def run(args: Any, argv: list[str]) -> int:
    out = merge_run(args.run_dir, args.output_dir, args.checkpoint)
    print(f"merged model written to {out}")
    return 0
