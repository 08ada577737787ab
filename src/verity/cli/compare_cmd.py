"""``verity compare ENV -m A -m B …``: evaluate several models on the same examples and seeds.

``-b`` / ``-k`` may be given several times and are matched to ``-m`` by position ('-' or ''
means a local, in-process model). Prints a markdown table (best per row in bold) and writes
``comparison.md``, ``comparison.json``, ``comparison.png`` and one ``verity eval`` results
directory per model under ``-o``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from verity.cli.derive import add_dataclass_args, build_config
from verity.eval.compare import CompareConfig, compare, markdown_table
from verity.utils import default_out_dir


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare models on the same examples and seeds",
                       description="Evaluate each -m on the same examples and seeds and compare them: a markdown "
                                   "table, comparison.json and a bar chart. -b/-k repeat and match -m by position.")
    add_dataclass_args(p, CompareConfig)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    cfg = build_config(CompareConfig, args, argv)
    cfg.validate()
    out = cfg.output_dir or default_out_dir("compare", cfg.env)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if not cfg.json else None
    c = compare(cfg, out, show_progress=not cfg.json, log=log)
    if cfg.json:
        print(json.dumps({**c.to_json(), "output_dir": out}))
    else:
        print(markdown_table(c))
        print(f"written: {out}/comparison.md, comparison.json, comparison.png (per-model results in {out}/<model>/)")
    return 0
