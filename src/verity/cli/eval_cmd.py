"""``verity eval``: evaluate a model (in-process or behind an endpoint) in an environment."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from verity.cli.derive import add_dataclass_args, build_config
from verity.eval.config import EvalConfig, parse_env_args


def register(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a model in an environment",
                       description="Evaluate a model: n examples × r rollouts, a table per reward function.")
    add_dataclass_args(p, EvalConfig)


def default_out_dir(kind: str, env: str, model: str) -> str:
    def slug(s):
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(s).name if "/" in s and Path(s).exists() else s)[-40:]
    return f"outputs/{kind}/{slug(env)}--{slug(model)}--{time.strftime('%Y%m%d-%H%M%S')}"


def load_env_for(cfg_env: str, env_args: str | dict, on_reward_error: str = "zero") -> Any:
    from verity.envs.registry import load_environment

    env = load_environment(cfg_env, **parse_env_args(env_args))
    if env.rubric is not None:
        env.rubric.on_error = on_reward_error
    return env


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
                           timeout=cfg.timeout, max_retries=cfg.max_retries)
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


def run_eval(env: Any, sampler: Any, cfg: EvalConfig, show_progress: bool = True, out_dir: str | None = None) -> Any:
    """Run one evaluation with a progress bar; shared by ``eval`` and ``compare``."""
    from verity.eval.evaluate import evaluate

    sampling = {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
                **parse_env_args(cfg.sampling_args, "-S")}
    base = {"max_tokens": 512, "temperature": 1.0, **env.sampling_args}
    out = out_dir or cfg.output_dir or default_out_dir("evals", cfg.env, cfg.model)
    progress = _progress(show_progress)
    try:
        from verity.eval.evaluate import sampling_args_from

        return asyncio.run(evaluate(env, sampler, cfg.num_examples, cfg.rollouts_per_example,
                                    sampling_args_from(sampling, base), out_dir=out, resume=cfg.resume,
                                    seed=cfg.seed, chunk_size=_chunk(sampler, cfg), on_progress=progress))
    finally:
        if hasattr(progress, "close"):
            progress.close()


def _chunk(sampler: Any, cfg: EvalConfig) -> int:
    return getattr(sampler, "batch_size", None) or max(cfg.concurrency * 2, 16)


class _Bar:
    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="rollout", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _progress(show: bool) -> Any:
    return _Bar() if show and sys.stderr.isatty() else (lambda d, t: None)


def json_summary(env_id: str, model: str, results: Any) -> dict[str, Any]:
    return {
        "env": env_id, "model": model,
        "num_examples": results.metadata.get("num_examples"),
        "rollouts_per_example": results.metadata.get("rollouts_per_example"),
        "metrics": results.metrics,
        "errors": results.summary["errors"],
        "results_dir": results.results_dir,
    }
