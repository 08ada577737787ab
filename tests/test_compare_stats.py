"""Bootstrap intervals, paired differences and win/tie/loss counts of ``verity compare``, checked
against hand-made cases, the exact bootstrap distribution, and a plain numpy reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from verity.eval.stats import by_example, mean_interval, paired, resample_indices


def _reference(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """Textbook percentile bootstrap of the mean of ``values`` (one value per example)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    lo, hi = np.percentile(values[idx].mean(axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def test_mean_interval_matches_numpy_reference_with_the_same_seed() -> None:
    rng = np.random.default_rng(123)
    per_example = rng.uniform(0, 1.6, size=37)
    groups = [[float(v)] for v in per_example]
    got = mean_interval(groups, resamples=4000, seed=7)
    assert got.value == pytest.approx(per_example.mean(), abs=1e-12)
    assert (got.low, got.high) == pytest.approx(_reference(per_example, 4000, 7), abs=1e-12)
    assert got.low < got.value < got.high
    other = mean_interval(groups, resamples=4000, seed=8)
    assert (other.low, other.high) != (got.low, got.high)  # the seed is used


def test_mean_interval_matches_the_exact_bootstrap_distribution() -> None:
    # 5 examples: the bootstrap distribution of the mean has 5**5 equally likely resamples; its exact
    # 2.5% / 97.5% quantiles are what 20,000 Monte Carlo draws must approach
    values = [0.0, 0.1, 0.5, 1.1, 1.6]
    means = np.sort([np.mean(c) for c in itertools.product(values, repeat=5)])
    exact_lo = means[int(np.ceil(0.025 * len(means))) - 1]
    exact_hi = means[int(np.ceil(0.975 * len(means))) - 1]
    got = mean_interval([[v] for v in values], resamples=20_000, seed=0)
    assert got.value == pytest.approx(0.66)
    assert got.low == pytest.approx(exact_lo, abs=0.03) and got.high == pytest.approx(exact_hi, abs=0.03)


def test_rollouts_of_an_example_stay_together() -> None:
    # 6 examples x 4 identical rollouts: resampling examples is resampling the 6 per-example values,
    # which gives a wider interval than (wrongly) resampling the 24 rollouts one by one
    per_example = np.array([0.0, 0.0, 0.5, 1.0, 1.5, 1.6])
    groups = [[float(v)] * 4 for v in per_example]
    got = mean_interval(groups, resamples=5000, seed=3)
    assert (got.low, got.high) == pytest.approx(_reference(per_example, 5000, 3), abs=1e-12)
    naive = _reference(np.repeat(per_example, 4), 5000, 3)
    assert got.high - got.low > 1.5 * (naive[1] - naive[0])
    # unequal rollout counts: the point estimate is the mean over all rollouts
    uneven = mean_interval([[1.0, 1.0, 1.0], [0.0]], resamples=100, seed=0)
    assert uneven.value == pytest.approx(0.75) and 0.0 <= uneven.low <= uneven.high <= 1.0


def test_non_negative_scores_never_get_an_interval_below_zero() -> None:
    got = mean_interval([[0.0], [0.0], [0.0], [0.0], [0.1]], resamples=2000, seed=0)
    assert got.low == 0.0 and got.high > 0.0


def test_paired_difference_and_win_tie_loss() -> None:
    records_a = [{"example_id": i, "rollout_idx": j, "reward": r, "scores": {"exact": float(r > 1)}}
                 for i, rs in enumerate([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [1.5, 0.5]]) for j, r in enumerate(rs)]
    records_b = [{"example_id": i, "rollout_idx": j, "reward": r, "scores": {"exact": float(r > 1)}}
                 for i, rs in enumerate([[1.0, 0.0], [1.0, 1.0], [0.0, 0.5], [1.5, 1.5]]) for j, r in enumerate(rs)]
    a, b = by_example(records_a, "reward"), by_example(records_b, "reward")
    assert a == {0: [0.0, 0.0], 1: [1.0, 1.0], 2: [0.5, 0.5], 3: [1.5, 0.5]}
    p = paired(a, b, resamples=3000, seed=5)
    # per-example differences of means: +0.5, 0, -0.25, +0.5
    d = np.array([0.5, 0.0, -0.25, 0.5])
    assert (p.wins, p.ties, p.losses, p.n) == (2, 1, 1, 4)
    assert p.diff.value == pytest.approx(0.1875)
    assert (p.diff.low, p.diff.high) == pytest.approx(_reference(d, 3000, 5), abs=1e-12)
    assert by_example(records_b, "exact") == {0: [0.0, 0.0], 1: [0.0, 0.0], 2: [0.0, 0.0], 3: [1.0, 1.0]}


def test_paired_uses_only_shared_examples_and_a_constant_shift_is_certain() -> None:
    a = {0: [0.2], 1: [0.4], 2: [0.9], 7: [1.0]}
    b = {0: [0.5], 1: [0.7], 2: [1.2], 9: [0.0]}
    p = paired(a, b, resamples=500, seed=0)
    assert (p.wins, p.ties, p.losses) == (3, 0, 0)
    assert p.diff.value == pytest.approx(0.3) and p.diff.low == pytest.approx(0.3) and p.diff.high == pytest.approx(0.3)
    with pytest.raises(ValueError, match="share no example"):
        paired({0: [1.0]}, {1: [1.0]})


def test_same_draws_for_every_model() -> None:
    assert np.array_equal(resample_indices(50, 100, seed=4), resample_indices(50, 100, seed=4))
    with pytest.raises(ValueError):
        resample_indices(0)
