"""One evaluation run as ``verity eval`` and ``verity compare`` do it: sampling args from the
config and the environment's defaults, a results directory, a progress bar on a terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from verity.config import parse_env_args
from verity.eval.config import EvalConfig
from verity.utils import default_out_dir, run_sync

if TYPE_CHECKING:
    from verity.envs.base import Environment
    from verity.eval.evaluate import EvalResults
    from verity.rollout.sampler import Sampler


def run_eval(env: Environment, sampler: Sampler, cfg: EvalConfig, show_progress: bool = True,
             out_dir: str | None = None) -> EvalResults:
    """Run one evaluation with a progress bar; shared by ``eval`` and ``compare``."""
    from verity.eval.evaluate import evaluate, sampling_args_from

    sampling = {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
                **parse_env_args(cfg.sampling_args, "-S")}
    base = {"max_tokens": 512, "temperature": 1.0, **env.sampling_args}
    out = out_dir or cfg.output_dir or default_out_dir("evals", cfg.env, cfg.model)
    progress = _progress(show_progress)
    try:
        # run_sync: also inside Jupyter, where an event loop is already running
        return run_sync(evaluate(env, sampler, cfg.num_examples, cfg.rollouts_per_example,
                                 sampling_args_from(sampling, base), out_dir=out, resume=cfg.resume,
                                 seed=cfg.seed, chunk_size=_chunk(sampler, cfg), on_progress=progress))
    finally:
        if hasattr(progress, "close"):
            progress.close()


def _chunk(sampler: Sampler, cfg: EvalConfig) -> int:
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
    """The one-object summary ``verity eval --json`` prints."""
    return {
        "env": env_id, "model": model,
        "num_examples": results.metadata.get("num_examples"),
        "rollouts_per_example": results.metadata.get("rollouts_per_example"),
        "metrics": results.metrics,
        "errors": results.summary["errors"],
        "results_dir": results.results_dir,
    }
