"""``verity prefs``: preference pairs (or KTO rows) from any environment, scored by its rubric."""

from __future__ import annotations

import argparse
from typing import Any

from verity.cli.derive import add_dataclass_args, build_config
from verity.train.config import PrefsConfig


def register(sub: Any) -> None:
    p = sub.add_parser("prefs", help="make preference pairs from an environment: best vs worst of R samples",
                       description="Sample R completions per prompt, score them with the environment's rubric and "
                                   "write (best, worst) pairs where the rewards differ, for `verity dpo`.")
    add_dataclass_args(p, PrefsConfig)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    cfg = build_config(PrefsConfig, args, argv)
    cfg.validate()
    from verity.envs.registry import load_env_for
    from verity.rollout.sampler import make_sampler
    from verity.train.prefs import make_preferences

    env = load_env_for(cfg.env, cfg.env_args)
    env.require_rubric()
    sampler = make_sampler(cfg.model, batch_size=cfg.batch_size, dtype=cfg.dtype)
    s = make_preferences(env, sampler, cfg)
    kind = "KTO rows" if cfg.kto_threshold is not None else "pairs"
    ties = "" if cfg.kto_threshold is not None else f", {s.ties} prompts dropped (all rewards equal)"
    print(f"{s.rows} {kind} from {s.prompts} prompts{ties}, {s.failed} failed rollouts dropped; "
          f"mean sampled reward {s.reward_mean:.4f}; written to {cfg.output}")
    return 0
