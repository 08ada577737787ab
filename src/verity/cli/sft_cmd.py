"""``verity sft``: supervised fine-tuning on prompt/completion or chat data, or an environment's gold answers."""

from __future__ import annotations

import argparse
from typing import Any

from verity.cli.derive import add_dataclass_args, build_config
from verity.train.config import SFTConfig


def register(sub: Any) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning (completion-only loss)",
                       description="SFT on JSONL/Parquet/hub data with prompt/completion or messages, or --from-env.")
    add_dataclass_args(p, SFTConfig)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    cfg = build_config(SFTConfig, args, argv)
    cfg.validate()
    if cfg.dry_run:
        from verity.train.dryrun import dry_run_sft

        print("\n".join(dry_run_sft(cfg)))
        return 0
    from verity.envs.registry import load_env_for
    from verity.train.sft_data import load_sft_rows, rows_from_env
    from verity.utils import default_out_dir

    if cfg.from_env:
        convs = rows_from_env(load_env_for(cfg.from_env, cfg.env_args))
    else:
        assert cfg.data is not None  # validate() requires DATA or --from-env
        convs = load_sft_rows(cfg.data)
    if cfg.output_dir is None:
        cfg.output_dir = default_out_dir("sft", cfg.from_env or str(cfg.data), cfg.model)
    from verity.train.dist import run_and_leave
    from verity.train.sft import SFTTrainer

    trainer = SFTTrainer(convs, cfg.model, cfg)  # joins the torchrun process group when there is one
    last, writer = run_and_leave(trainer.train)
    if not writer:  # under torchrun, rank 0 alone reports
        return 0
    print(f"final loss {last.get('loss', float('nan')):.4f}; model: {trainer.run_dir / 'final'}")
    return 0
