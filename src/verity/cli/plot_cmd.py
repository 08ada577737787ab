"""``verity plot RUN_DIR``: redraw the reward (RL) or loss (SFT) curve from metrics.jsonl."""

from __future__ import annotations

from typing import Any

from verity.errors import VerityError


def register(sub: Any) -> None:
    p = sub.add_parser("plot", help="redraw a run's reward/loss curve")
    p.add_argument("run_dir", help="run directory with metrics.jsonl")
    p.add_argument("-o", "--output", default=None, help="PNG path (default: RUN_DIR/reward_curve.png)")


def run(args: Any, argv: list[str]) -> int:
    from pathlib import Path

    from verity.train.plot import plot_run

    if not (Path(args.run_dir) / "metrics.jsonl").is_file():
        raise VerityError(f"{args.run_dir}: no metrics.jsonl (not a verity run directory?)")
    print(plot_run(args.run_dir, args.output))
    return 0
