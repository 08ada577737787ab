"""``verity rm``: a Bradley-Terry reward model (a scalar head on the LM) trained on preference pairs."""

from __future__ import annotations

import argparse
from typing import Any

from verity.cli.derive import add_dataclass_args, build_config
from verity.cli.dpo_cmd import run_on_pairs
from verity.train.config import RMConfig


def register(sub: Any) -> None:
    p = sub.add_parser("rm", help="train a Bradley-Terry reward model (scalar head on the LM) on preference pairs",
                       description="Train on prompt/chosen/rejected pairs from JSONL/Parquet/hub data "
                                   "(`verity prefs` makes them); held-out pairwise accuracy with --eval-data.")
    add_dataclass_args(p, RMConfig)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    return run_on_pairs(build_config(RMConfig, args, argv), "rm")
