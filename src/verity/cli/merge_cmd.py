"""``verity merge RUN_DIR -o OUT``: fold a run's LoRA adapter into its base model and save a plain HF model."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("merge", help="merge a LoRA adapter into the base model and export a HF model dir")
    p.add_argument("run_dir", help="RL or SFT run directory")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the latest)")
    p.add_argument("-o", "--output-dir", required=True, help="where to write the merged model")


def run(args: Any, argv: list[str]) -> int:
    from verity.train.checkpoint import merge_run

    out = merge_run(args.run_dir, args.output_dir, args.checkpoint)
    print(f"merged model written to {out}")
    return 0
