"""``verity demo``: the whole story offline — RL-train the bundled starter model on PII masking,
then evaluate base vs trained on the same held-out examples and print them side by side.

Equivalent to (the training settings are the shipped preset ``src/verity/presets/demo.toml``)::

    verity train --config demo -o OUT/run
    verity merge OUT/run -o OUT/trained
    verity compare pii-masking -m verity-tiny -m OUT/trained -n 200 -r 1 -T 1.0 -o OUT/compare
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verity.cli.derive import add_dataclass_args, build_config
from verity.config import flag, load_toml
from verity.train.config import RLConfig

#: The demo's training run is RLConfig + this shipped preset (src/verity/presets/demo.toml) ...
PRESET = "demo"
#: ... + these of its fields, which the demo offers as flags (defaults from the preset).
TUNABLE = ("steps", "group_size", "groups_per_batch", "lr", "loss", "scale_rewards", "lora_rank", "max_tokens",
           "model", "seed", "chat_template", "chat_template_kwargs")


@dataclass
class DemoConfig:
    """The demo's own settings (the training run's are RLConfig fields, see :data:`TUNABLE`)."""

    compare_examples: int = flag("--compare-examples", "--eval-examples", default=200)
    """Held-out examples for the base-vs-trained comparison (the training run itself evaluates nothing)."""
    output_dir: str | None = flag("-o", "--output-dir", default=None)
    """Where the run, the merged model and the comparison go (default: outputs/demo/TIME)."""


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="RL-train verity-tiny on pii-masking and compare base vs trained (offline)",
                       description=(__doc__ or "").split("\n")[0])
    add_dataclass_args(p, RLConfig, only=TUNABLE, defaults=load_toml(PRESET))
    add_dataclass_args(p, DemoConfig)


def training_config(args: argparse.Namespace, out: Path) -> RLConfig:
    """The preset with the tunable flags' values; a checkpoint every steps // 4, the run in OUT/run."""
    from verity.config import from_preset

    tuned = {name: getattr(args, name) for name in TUNABLE}
    return from_preset(RLConfig, PRESET, **tuned, save_every=max(1, tuned["steps"] // 4), output_dir=str(out / "run"))


def run(args: argparse.Namespace, argv: list[str]) -> int:
    cfg = build_config(DemoConfig, args, argv)
    from verity.envs.registry import load_environment
    from verity.eval.compare import CompareConfig, compare, markdown_table
    from verity.models.loading import resolve_model
    from verity.train.checkpoint import merge_run
    from verity.train.rl import RLTrainer

    out = Path(cfg.output_dir or f"outputs/demo/{time.strftime('%Y%m%d-%H%M%S')}")
    rl = training_config(args, out)
    rl.check_chat_flags()
    resolve_model(rl.model)  # fail fast when the starter is missing
    if (out / "compare").exists():
        from verity.errors import ConfigError

        raise ConfigError(f"-o {out}: already holds a finished demo; choose another directory")
    t0 = time.time()
    print(f"[1/3] RL: {rl.steps} steps × {rl.groups_per_batch} prompts × {rl.group_size} rollouts", flush=True)
    trainer = RLTrainer(load_environment(rl.env), rl.model, rl)
    trainer.train()
    print(f"[2/3] merge → {out / 'trained'}", flush=True)
    del trainer
    merge_run(str(out / "run"), str(out / "trained"))
    print(f"[3/3] eval base vs trained on {cfg.compare_examples} held-out examples (T=1.0)", flush=True)
    cc = CompareConfig(env=rl.env, models=[rl.model, str(out / "trained")], num_examples=cfg.compare_examples,
                       rollouts_per_example=1, temperature=1.0, max_tokens=rl.max_tokens, seed=rl.seed,
                       output_dir=str(out / "compare"), chat_template=rl.chat_template,
                       chat_template_kwargs=rl.chat_template_kwargs)
    c = compare(cc, out / "compare", show_progress=True)
    print()
    print(markdown_table(c))
    base, trained = (m["metrics"]["reward"]["mean"] for m in c.models)
    print(f"total reward: base {base:.3f} → trained {trained:.3f} ({trained - base:+.3f}); "
          f"{(time.time() - t0) / 60:.1f} min in all")
    print(f"reward curve: {out / 'run' / 'reward_curve.png'}; comparison: {out / 'compare' / 'comparison.md'}")
    return 0
