"""``verity eval``: evaluate a model (in-process or behind an endpoint) in an environment."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from verity.cli.derive import add_dataclass_args, build_config
from verity.envs.registry import load_env_for
from verity.eval.config import EvalConfig
from verity.eval.run import json_summary, run_eval


def register(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a model in an environment",
                       description="Evaluate a model: n examples × r rollouts, a table per reward function.")
    add_dataclass_args(p, EvalConfig)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    cfg = build_config(EvalConfig, args, argv)
    cfg.validate()
    from verity.rollout.sampler import make_sampler

    env = load_env_for(cfg.env, cfg.env_args, cfg.on_reward_error)
    env.require_rubric()
    if cfg.output_dir and not cfg.resume and (Path(cfg.output_dir) / "results.jsonl").is_file():
        from verity.errors import ConfigError

        raise ConfigError(f"{cfg.output_dir}/results.jsonl already has results; pass --resume or choose another -o")
    sampler = make_sampler(cfg.model, base_url=cfg.base_url, api_key_env=cfg.api_key_var,
                           concurrency=cfg.concurrency, batch_size=cfg.batch_size, dtype=cfg.dtype,
                           timeout=cfg.timeout, max_retries=cfg.max_retries, chat_template=cfg.chat_template,
                           template_kwargs=cfg.template_kwargs())
    results = run_eval(env, sampler, cfg, show_progress=not cfg.json)
    if cfg.json:
        print(json.dumps(json_summary(cfg.env, cfg.model, results)))
    else:
        from verity.eval.report import print_summary

        print_summary(results, title=f"{cfg.env} · {cfg.model}")
        print(f"results: {results.results_dir}/results.jsonl")
    from verity.eval.evaluate import raise_if_all_failed

    raise_if_all_failed(results)
    return 0
