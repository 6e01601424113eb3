"""The statistics an evaluation report and a comparison of two runs print: bootstrap intervals of a mean, quantiles,
and paired tests of two runs on the same samples.

Every bootstrap here is the plain percentile bootstrap over samples, seeded (`seed`), so a report is reproducible:
`resamples` means of n values drawn with replacement, the interval their (1 - confidence)/2 and (1 + confidence)/2
quantiles. With one sample the interval is that value (nothing to resample), and the report says n is too small.
The signed-rank test is SciPy's `scipy.stats.wilcoxon` (zero differences dropped, two-sided, exact for small n);
this module only fixes those choices and gives the degenerate cases (no or only tied differences) a defined answer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
TIE_TOLERANCE = 1e-9  # per-sample differences smaller than this are ties (floating-point noise, not a change)
_CHUNK = 256  # resamples drawn at a time: bounded memory for large runs, the same random stream as one draw


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def scaled(self, factor: float) -> "Interval":
        return Interval(self.low * factor, self.high * factor)

    def to_json(self) -> list[float]:
        return [self.low, self.high]


def bootstrap_means(
    values: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED, centre: float = 0.0
) -> np.ndarray:
    """`resamples` means of `values` (minus `centre`) resampled with replacement; row r uses the r-th n draws of
    `np.random.default_rng(seed).integers(0, n)`."""
    data = np.asarray(values, dtype=float) - centre
    rng, count = np.random.default_rng(seed), len(data)
    means = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        rows = min(_CHUNK, resamples - start)
        means[start : start + rows] = data[rng.integers(0, count, size=(rows, count))].mean(axis=1)
    return means


def bootstrap_interval(
    values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED
) -> Optional[Interval]:
    """Percentile bootstrap interval of the mean; None without values, the value itself for one."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    if data.size == 1:
        return Interval(float(data[0]), float(data[0]))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(bootstrap_means(data, resamples, seed), [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def quantiles(values: Sequence[float], points: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9)) -> list[float]:
    """Linear-interpolation quantiles (NumPy's default); empty for no values."""
    data = np.asarray(values, dtype=float)
    return [] if data.size == 0 else [float(q) for q in np.quantile(data, list(points))]


@dataclass(frozen=True)
class PairedTest:
    """Run B minus run A on the same samples, for one metric."""

    count: int
    mean_a: float
    mean_b: float
    mean_difference: float
    interval: Optional[Interval]  # bootstrap interval of the mean difference
    bootstrap_p: float  # two-sided, resampling the differences centred on 0 (the null of no mean change)
    wilcoxon_p: float  # two-sided signed-rank test, zero differences dropped
    wilcoxon_statistic: Optional[float]
    wins: int  # samples where B > A
    losses: int  # samples where B < A
    ties: int

    def to_json(self) -> dict:
        out = asdict(self)
        out["interval"] = self.interval.to_json() if self.interval else None
        return out


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> PairedTest:
    """Compares two runs' per-sample values (same samples, same order): mean difference, its bootstrap interval, a
    paired bootstrap p-value and the Wilcoxon signed-rank p-value, and the wins, losses and ties."""
    first, second = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"paired values must be two equal-length lists, got {first.shape} and {second.shape}")
    if first.size == 0:
        raise ValueError("no paired samples to compare")
    differences = second - first
    differences[np.abs(differences) < TIE_TOLERANCE] = 0.0
    statistic, wilcoxon_p = signed_rank_test(differences)
    return PairedTest(
        count=int(first.size),
        mean_a=float(first.mean()),
        mean_b=float(second.mean()),
        mean_difference=float(differences.mean()),
        interval=bootstrap_interval(differences, confidence, resamples, seed),
        bootstrap_p=paired_bootstrap_p(differences, resamples, seed),
        wilcoxon_p=wilcoxon_p,
        wilcoxon_statistic=statistic,
        wins=int((differences > 0).sum()),
        losses=int((differences < 0).sum()),
        ties=int((differences == 0).sum()),
    )


def paired_bootstrap_p(differences: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> float:
    """Two-sided bootstrap p-value of "the mean difference is 0": the share of resampled means of the centred
    differences at least as far from 0 as the observed mean, with the +1 correction so it is never exactly 0."""
    data = np.asarray(differences, dtype=float)
    observed = abs(float(data.mean()))
    if data.size < 2:
        return 1.0  # one difference says nothing about its spread
    null_means = bootstrap_means(data, resamples, seed, centre=float(data.mean()))
    extreme = int((np.abs(null_means) >= observed - 1e-12).sum())
    return (extreme + 1) / (resamples + 1)


def signed_rank_test(differences: Sequence[float]) -> tuple[Optional[float], float]:
    """(statistic, two-sided p) of the Wilcoxon signed-rank test on paired differences, zeros dropped.

    No non-zero difference: (None, 1.0), nothing changed. SciPy chooses the exact distribution for small samples
    without ties among the ranks and the normal approximation otherwise."""
    data = np.asarray(differences, dtype=float)
    if not np.any(data != 0.0):
        return None, 1.0
    result = stats.wilcoxon(data, zero_method="wilcox", alternative="two-sided")
    p_value = float(result.pvalue)
    return float(result.statistic), (1.0 if math.isnan(p_value) else min(1.0, p_value))
