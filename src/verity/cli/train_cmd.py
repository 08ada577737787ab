"""``verity train``: GRPO-family RL of a local model in an environment (a thin layer over RLConfig)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from verity.cli.derive import add_dataclass_args, build_config
from verity.train.config import RLConfig


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="RL-train a model in an environment (GRPO family, LoRA)",
                       description="GRPO-family RL with LoRA: rollouts from the environment, rewards from its rubric.")
    add_dataclass_args(p, RLConfig)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    cfg = build_config(RLConfig, args, argv)
    cfg.validate()
    from verity.envs.registry import load_env_for
    from verity.utils import default_out_dir

    env = load_env_for(cfg.env, cfg.env_args)
    env.require_rubric()
    if cfg.dry_run:
        from verity.train.dryrun import dry_run_rl

        print("\n".join(dry_run_rl(cfg, env)))
        return 0
    if cfg.output_dir is None:
        cfg.output_dir = default_out_dir("runs", cfg.env, cfg.model)
    from verity.train.dist import run_and_leave
    from verity.train.rl import RLTrainer

    trainer = RLTrainer(env, cfg.model, cfg)  # joins the torchrun process group when there is one
    last, writer = run_and_leave(trainer.train)
    if not writer:  # under torchrun, rank 0 alone reports
        return 0
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in last.items()
                      if k.startswith(("reward/", "eval/", "step"))}))
    print(f"run: {trainer.run_dir} (metrics.jsonl, reward_curve.png, checkpoints/)")
    return 0
