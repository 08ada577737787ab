"""``verity demo``: the whole story offline — RL-train the bundled starter model on PII masking,
then evaluate base vs trained on the same held-out examples and print them side by side.

Equivalent to::

    verity train pii-masking -m verity-tiny <demo defaults> -o OUT/run
    verity merge OUT/run -o OUT/trained
    verity compare pii-masking -m verity-tiny -m OUT/trained -n 200 -r 1 -T 1.0 -o OUT/compare
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verity.algos.advantages import Scale
from verity.algos.losses import LossType
from verity.cli.derive import add_dataclass_args, build_config
from verity.config import flag


@dataclass
class DemoConfig:
    steps: int = flag("--steps", default=100)
    """RL steps."""
    group_size: int = flag("--group-size", default=8)
    """Rollouts per prompt."""
    groups_per_batch: int = flag("--groups-per-batch", default=16)
    """Prompts per step."""
    lr: float = flag("--lr", default=1e-4)
    """Learning rate."""
    loss: LossType = flag("--loss", default="dr_grpo")
    """Policy loss (see `verity train --help`)."""
    scale_rewards: Scale = flag("--scale-rewards", default="none")
    """Advantage scaling; 'none' (Dr. GRPO) does not amplify groups whose rewards barely differ."""
    lora_rank: int = flag("--lora-rank", default=0)
    """LoRA rank (0 = full fine-tune; the starter model is small)."""
    max_tokens: int = flag("--max-tokens", default=160)
    """Max completion tokens (the longest masked answers are ~110 tokens)."""
    eval_examples: int = flag("--eval-examples", default=200)
    """Held-out examples for the base-vs-trained comparison."""
    model: str = flag("-m", "--model", default="verity-tiny")
    """Starting model."""
    output_dir: str | None = flag("-o", "--output-dir", default=None)
    """Where the run, the merged model and the comparison go (default: outputs/demo/TIME)."""
    seed: int = flag("--seed", default=0)
    """Seed for data order and sampling."""


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="RL-train verity-tiny on pii-masking and compare base vs trained (offline)",
                       description=(__doc__ or "").split("\n")[0])
    add_dataclass_args(p, DemoConfig)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    cfg = build_config(DemoConfig, args, argv)
    from verity.envs.registry import load_environment
    from verity.eval.compare import CompareConfig, compare, markdown_table
    from verity.models.loading import resolve_model
    from verity.train.checkpoint import merge_run
    from verity.train.config import RLConfig
    from verity.train.rl import RLTrainer

    resolve_model(cfg.model)  # fail fast when the starter is missing
    out = Path(cfg.output_dir or f"outputs/demo/{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / "compare").exists():
        from verity.errors import ConfigError

        raise ConfigError(f"-o {out}: already holds a finished demo; choose another directory")
    t0 = time.time()
    print(f"[1/3] RL: {cfg.steps} steps × {cfg.groups_per_batch} prompts × {cfg.group_size} rollouts", flush=True)
    rl = RLConfig(env="pii-masking", model=cfg.model, group_size=cfg.group_size, groups_per_batch=cfg.groups_per_batch,
                  lr=cfg.lr, max_tokens=cfg.max_tokens, lora_rank=cfg.lora_rank, steps=cfg.steps,
                  loss=cfg.loss, scale_rewards=cfg.scale_rewards,
                  save_every=max(1, cfg.steps // 4), output_dir=str(out / "run"), seed=cfg.seed,
                  eval_every=0, eval_examples=0, overwrite=True)  # a killed demo's partial run is redone
    trainer = RLTrainer(load_environment("pii-masking"), cfg.model, rl)
    trainer.train()
    print(f"[2/3] merge → {out / 'trained'}", flush=True)
    del trainer
    merge_run(str(out / "run"), str(out / "trained"))
    print(f"[3/3] eval base vs trained on {cfg.eval_examples} held-out examples (T=1.0)", flush=True)
    cc = CompareConfig(env="pii-masking", models=[cfg.model, str(out / "trained")], num_examples=cfg.eval_examples,
                       rollouts_per_example=1, temperature=1.0, max_tokens=cfg.max_tokens, seed=cfg.seed,
                       output_dir=str(out / "compare"))
    c = compare(cc, out / "compare", show_progress=True)
    print()
    print(markdown_table(c))
    base, trained = (m["metrics"]["reward"]["mean"] for m in c.models)
    print(f"total reward: base {base:.3f} → trained {trained:.3f} ({trained - base:+.3f}); "
          f"{(time.time() - t0) / 60:.1f} min in all")
    print(f"reward curve: {out / 'run' / 'reward_curve.png'}; comparison: {out / 'compare' / 'comparison.md'}")
    return 0
