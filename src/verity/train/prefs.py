"""Preference data from any environment: sample R completions per prompt, score them with the
environment's rubric, keep (best, worst) where the rewards differ — or, for KTO, every completion
labelled by a reward threshold. Every verifiable environment becomes preference data.

Sampling is ``verity eval``'s path (:func:`verity.eval.evaluate.evaluate` on the chosen split); the
rows are written atomically (temp file + rename) in the format ``verity dpo`` reads.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from verity.errors import VerityError
from verity.types import ZERO_STD_TOL

if TYPE_CHECKING:
    from verity.envs.base import Environment
    from verity.rollout.sampler import Sampler
    from verity.train.config import PrefsConfig


@dataclass(frozen=True)
class PrefsStats:
    """What :func:`preference_rows` made of the rollouts."""

    prompts: int
    rows: int
    ties: int
    """Prompts whose completions all scored the same (no pair; pairs mode only)."""
    failed: int
    """Rollouts dropped because generation failed."""
    reward_mean: float
    """Mean reward of the sampled completions."""


def preference_rows(records: Sequence[dict[str, Any]], kto_threshold: float | None = None
                    ) -> tuple[list[dict[str, Any]], PrefsStats]:
    """Pairs (best, worst by reward; the lower rollout index on ties within the best/worst) from
    results.jsonl-style records, one per prompt whose rewards differ; with ``kto_threshold``,
    every completion labelled ``reward >= kto_threshold``."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    failed = 0
    for r in records:
        if r.get("error"):
            failed += 1
        else:
            groups[r["example_id"]].append(r)
    rows: list[dict[str, Any]] = []
    ties = 0
    for eid in sorted(groups):
        g = sorted(groups[eid], key=lambda r: r["rollout_idx"])
        if kto_threshold is not None:
            rows += [{"prompt": r["prompt"], "completion": r["completion"], "label": r["reward"] >= kto_threshold,
                      "reward": r["reward"], "example_id": eid} for r in g]
            continue
        best = max(g, key=lambda r: r["reward"])
        worst = min(g, key=lambda r: r["reward"])
        if best["reward"] - worst["reward"] <= ZERO_STD_TOL or best["completion"] == worst["completion"]:
            ties += 1
            continue
        rows.append({"prompt": best["prompt"], "chosen": best["completion"], "rejected": worst["completion"],
                     "chosen_reward": best["reward"], "rejected_reward": worst["reward"], "example_id": eid})
    kept = [r["reward"] for g in groups.values() for r in g]
    return rows, PrefsStats(len(groups), len(rows), ties, failed, sum(kept) / len(kept) if kept else float("nan"))


def make_preferences(env: Environment, sampler: Sampler, cfg: PrefsConfig) -> PrefsStats:
    """Sample, score and write ``cfg.output``; returns the counts."""
    from verity.config import parse_env_args
    from verity.eval.evaluate import evaluate, sampling_args_from
    from verity.utils import atomic_write_text, run_sync

    env.require_rubric()
    sampling = {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
                **parse_env_args(cfg.sampling_args, "-S")}
    base = {"max_tokens": 512, "temperature": 1.0, **env.sampling_args}
    res = run_sync(evaluate(env, sampler, cfg.num_examples, cfg.rollouts_per_example,
                            sampling_args_from(sampling, base), seed=cfg.seed, split=cfg.split,
                            chunk_size=getattr(sampler, "batch_size", None) or cfg.batch_size))
    rows, stats = preference_rows(res.records, cfg.kto_threshold)
    if not rows:
        raise VerityError(f"no preference pairs: the completions of all {stats.prompts} prompts scored the same "
                          f"({stats.failed} failed); sample more per prompt (-r), more prompts (-n) or at a higher -T")
    assert cfg.output is not None  # validate() requires -o
    atomic_write_text(cfg.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return stats
