"""Statistics for comparing models on the same examples: bootstrap intervals, paired differences, wins.

The unit of resampling is the *example*: all rollouts of an example stay together, because
rollouts of one prompt are correlated (resampling them one by one would understate the
uncertainty). Every model is resampled with the same draws (the same ``seed``), so intervals of
different models on the same examples are comparable and the paired difference uses matched
resamples. Intervals are percentile bootstrap intervals (Efron & Tibshirani 1993, ch. 13): a
mean of non-negative scores never gets an interval below zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95
TIE_TOL = 1e-9


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Paired:
    """Model B − model A on the examples both have: mean difference with its interval, and how
    many examples B scored higher (wins), equal (ties) or lower (losses) than A."""

    diff: Interval
    wins: int
    ties: int
    losses: int

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses


def by_example(records: Iterable[Mapping[str, Any]], metric: str) -> dict[Any, list[float]]:
    """``{example_id: [score of each rollout]}`` for ``metric`` ('reward' or a reward function name)."""
    out: dict[Any, list[float]] = {}
    for r in records:
        v = r["reward"] if metric == "reward" else (r.get("scores") or {}).get(metric, 0.0)
        out.setdefault(r["example_id"], []).append(float(v))
    return out


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, n] example indices drawn with replacement; the same for every model given a seed."""
    if n < 1:
        raise ValueError("bootstrap needs at least one example")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_interval(groups: Sequence[Sequence[float]], resamples: int = RESAMPLES, seed: int = 0,
                  level: float = LEVEL) -> Interval:
    """Mean over all rollouts, with the percentile bootstrap interval from resampling examples
    (``groups[i]`` = the scores of example i's rollouts; a drawn example brings all of them)."""
    sums = np.array([sum(g) for g in groups], dtype=np.float64)  # [n]
    counts = np.array([len(g) for g in groups], dtype=np.float64)  # [n]
    if len(groups) == 0 or counts.min() == 0:
        raise ValueError("every example needs at least one rollout")
    idx = resample_indices(len(groups), resamples, seed)  # [B, n]
    stats = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)  # [B]
    return Interval(float(sums.sum() / counts.sum()), *_percentiles(stats, level))


def paired(a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]], resamples: int = RESAMPLES,
           seed: int = 0, level: float = LEVEL) -> Paired:
    """B − A over the examples both have (``{example_id: rollout scores}``): the mean of the
    per-example differences of means with its percentile bootstrap interval, and per-example
    wins / ties / losses of B against A (equal within 1e-9 is a tie)."""
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError("the two models share no example")
    d = np.array([np.mean(b[k]) - np.mean(a[k]) for k in keys], dtype=np.float64)  # [n]
    idx = resample_indices(len(keys), resamples, seed)  # [B, n]
    diff = Interval(float(d.mean()), *_percentiles(d[idx].mean(axis=1), level))
    wins, losses = int((d > TIE_TOL).sum()), int((d < -TIE_TOL).sum())
    return Paired(diff, wins, len(keys) - wins - losses, losses)
