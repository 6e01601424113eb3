"""The statistics of the evaluation report and of `evaluate compare`, against independent computations: a bootstrap
written as a plain loop, SciPy's bootstrap, the exact signed-rank distribution enumerated by hand, SciPy's Wilcoxon,
and the degenerate cases (nothing changed, one sample)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from monailabel_app.core.statistics import (
    bootstrap_interval,
    paired_bootstrap_p,
    paired_test,
    quantiles,
    signed_rank_test,
)
from monailabel_app.evaluation.compare import verdict


def loop_bootstrap_means(values, resamples, seed, centre=0.0):
    """The textbook bootstrap, one resample at a time."""
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float) - centre
    means = []
    for _ in range(resamples):
        picks = rng.integers(0, len(data), size=len(data))
        means.append(sum(data[i] for i in picks) / len(data))
    return np.asarray(means)


def test_the_interval_is_the_loop_bootstraps_percentiles_with_the_same_seed():
    values = np.random.default_rng(3).beta(0.6, 0.9, size=57)
    means = loop_bootstrap_means(values, 700, seed=11)
    expected = np.quantile(means, [0.025, 0.975])
    interval = bootstrap_interval(values, resamples=700, seed=11)
    assert (interval.low, interval.high) == pytest.approx(tuple(expected), abs=1e-12)


def test_the_interval_agrees_with_scipys_percentile_bootstrap():
    values = np.random.default_rng(5).random(150)
    ours = bootstrap_interval(values, resamples=20000, seed=1)
    theirs = stats.bootstrap((values,), np.mean, method="percentile", n_resamples=20000, random_state=2)
    assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=0.006)
    assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=0.006)
    assert ours.low < values.mean() < ours.high


def test_hand_computed_intervals():
    # two values 0 and 1: the resampled mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the 95% interval is [0, 1]
    interval = bootstrap_interval([0.0, 1.0], resamples=4000)
    assert (interval.low, interval.high) == (0.0, 1.0)
    assert bootstrap_interval([0.3] * 9).to_json() == [0.3, 0.3]
    assert bootstrap_interval([0.7]).to_json() == [0.7, 0.7]
    assert bootstrap_interval([]) is None
    assert quantiles([1, 2, 3, 4, 5], (0.25, 0.5)) == [2.0, 3.0] and quantiles([]) == []


def exact_signed_rank_p(differences):
    """Two-sided exact p of the signed-rank statistic, every sign assignment enumerated (no ties, no zeros)."""
    data = np.asarray([d for d in differences if d != 0])
    ranks = stats.rankdata(np.abs(data))
    observed = ranks[data > 0].sum()
    total = ranks.sum()
    sums = [sum(r for r, sign in zip(ranks, signs) if sign) for signs in itertools.product((0, 1), repeat=len(ranks))]
    sums = np.asarray(sums)
    lower = min(observed, total - observed)
    return min(1.0, 2 * (sums <= lower + 1e-9).mean())


def test_the_signed_rank_p_is_the_exact_distributions_and_zeros_are_dropped():
    differences = [0.31, -0.02, 0.17, 0.44, 0.05, -0.09, 0.26, 0.12, 0.0, 0.0]
    statistic, p_value = signed_rank_test(differences)
    assert p_value == pytest.approx(exact_signed_rank_p(differences), abs=1e-12)
    assert statistic == pytest.approx(1 + 3)  # the smaller rank sum: the two negative differences' ranks


def test_the_signed_rank_p_matches_scipy_on_a_large_sample():
    rng = np.random.default_rng(8)
    a = rng.random(120)
    b = np.where(rng.random(120) < 0.2, a, a + rng.normal(0.03, 0.1, 120))  # a fifth unchanged (zero differences)
    test = paired_test(a, b)
    reference = stats.wilcoxon(b[b != a] - a[b != a])
    assert test.wilcoxon_p == pytest.approx(reference.pvalue, rel=1e-9)
    assert test.ties == int((b == a).sum()) and test.wins + test.losses + test.ties == 120


def test_the_paired_bootstrap_p_is_the_loop_bootstraps_with_centred_differences():
    differences = np.random.default_rng(4).normal(0.02, 0.1, 40)
    null = loop_bootstrap_means(differences, 500, seed=9, centre=differences.mean())
    expected = ((np.abs(null) >= abs(differences.mean()) - 1e-12).sum() + 1) / 501
    assert paired_bootstrap_p(differences, resamples=500, seed=9) == pytest.approx(expected, abs=1e-12)


def test_a_clear_improvement_is_found_and_its_direction_is_b_minus_a():
    rng = np.random.default_rng(2)
    a = rng.random(60) * 0.5
    test = paired_test(a, a + 0.2 + rng.normal(0, 0.02, 60))
    assert test.mean_difference == pytest.approx(0.2, abs=0.02) and test.interval.low > 0
    assert test.wilcoxon_p < 1e-6 and test.bootstrap_p < 0.01 and test.wins == 60
    assert verdict(test.to_json()) == "B better (both tests p < 0.05)"
    assert verdict(paired_test(a + 0.2, a).to_json()) == "B worse (both tests p < 0.05)"


def test_all_ties_and_one_sample_have_defined_answers():
    tied = paired_test([0.5, 0.2, 0.0], [0.5, 0.2, 0.0])
    assert (tied.wilcoxon_p, tied.bootstrap_p, tied.wilcoxon_statistic) == (1.0, 1.0, None)
    assert (tied.wins, tied.losses, tied.ties) == (0, 0, 3) and tied.interval.to_json() == [0.0, 0.0]
    assert verdict(tied.to_json()) == "no clear difference"
    single = paired_test([0.1], [0.9])
    assert single.count == 1 and single.bootstrap_p == 1.0 and single.wilcoxon_p == 1.0
    assert single.mean_difference == pytest.approx(0.8) and verdict(single.to_json()) == "one sample: no test possible"
    almost = paired_test([0.1, 0.2], [0.1 + 1e-12, 0.2])  # floating-point noise is a tie, not a win
    assert almost.ties == 2 and almost.wilcoxon_p == 1.0
    with pytest.raises(ValueError):
        paired_test([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        paired_test([], [])
