"""``verity dpo``: preference training (DPO, IPO, hinge on pairs; KTO on labelled completions)."""

from __future__ import annotations

import argparse
from typing import Any

from verity.cli.derive import add_dataclass_args, build_config
from verity.train.config import DPOConfig, RMConfig


def register(sub: Any) -> None:
    p = sub.add_parser("dpo", help="preference training: DPO, IPO, hinge or KTO against the frozen base",
                       description="Train on prompt/chosen/rejected pairs (or KTO prompt/completion/label rows) "
                                   "from JSONL/Parquet/hub data; `verity prefs` makes pairs from any environment.")
    add_dataclass_args(p, DPOConfig)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    return run_on_pairs(build_config(DPOConfig, args, argv), "dpo")


def run_on_pairs(cfg: RMConfig, kind: str) -> int:
    """``verity dpo`` / ``verity rm``: check every row before any compute, train, print the outcome."""
    cfg.validate()
    assert cfg.data is not None  # validate() requires DATA
    from verity.train.pref_data import load_pairs, load_preferences
    from verity.utils import default_out_dir

    # every row checked before any compute
    rows = load_preferences(cfg.data, kto=cfg.loss == "kto") if isinstance(cfg, DPOConfig) else load_pairs(cfg.data)
    eval_pairs = load_pairs(cfg.eval_data) if cfg.eval_data else []
    if cfg.output_dir is None:
        cfg.output_dir = default_out_dir(kind, cfg.data, cfg.model)
    if isinstance(cfg, DPOConfig):
        from verity.train.dpo import DPOTrainer

        trainer: Any = DPOTrainer(rows, cfg.model, cfg, eval_pairs)
    else:
        from verity.train.reward_model import RewardModelTrainer
        from verity.types import PreferencePair

        trainer = RewardModelTrainer([r for r in rows if isinstance(r, PreferencePair)], cfg.model, cfg, eval_pairs)
    last = trainer.train()
    line = f"final loss {last.get('loss', float('nan')):.4f}, margin {last.get('rewards/margin', float('nan')):.4f}"
    if "eval/rewards/accuracy" in last:
        line += f"; held-out pairwise accuracy {last['eval/rewards/accuracy']:.3f} ({last['eval/pairs']} pairs)"
    print(f"{line}; model: {trainer.run_dir / 'final'}")
    return 0
