"""How much a preference accuracy can be trusted: intervals for one model's share of pairs right, the paired
difference between two models scored on the same pairs, and how many pairs it takes to tell two accuracies apart.

Pure functions over per-pair outcomes (0/1 lists); scipy does the exact statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def overlaps(self, other: Estimate) -> bool:
        return self.low <= other.high and other.low <= self.high


def wilson(correct: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """Share of `n` pairs right with its Wilson score interval (coverage near nominal even at 0 or n right, unlike
    the normal approximation); NaN for no pairs."""
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan)
    correct = int(min(max(correct, 0), n))
    interval = stats.binomtest(correct, n).proportion_ci(confidence, method="wilson")
    return Estimate(correct / n, float(interval.low), float(interval.high))


def accuracy(outcomes: Sequence[int | bool], confidence: float = CONFIDENCE) -> Estimate:
    return wilson(int(np.sum(outcomes)), len(outcomes), confidence)


@dataclass(frozen=True)
class PairedDifference:
    """Model a minus model b on the same pairs."""

    estimate: Estimate  # difference in accuracy with the paired bootstrap interval (over clusters)
    a_only: int  # pairs a gets right and b wrong
    b_only: int  # pairs b gets right and a wrong
    p_value: float  # exact McNemar test (two-sided binomial test on the discordant pairs)
    clusters: int  # resampling units (prompts)

    @property
    def distinguishable(self) -> bool:
        """Both say so: the interval excludes 0 and McNemar's exact test rejects equality at the same level. The
        percentile bootstrap alone is too narrow when only a handful of pairs changed."""
        return not self.estimate.contains(0.0) and self.p_value < 1 - CONFIDENCE


def paired_difference(a: Sequence[int | bool], b: Sequence[int | bool], clusters: Sequence | None = None,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """Accuracy of `a` minus `b`, scored on the same pairs, with a paired bootstrap interval that resamples whole
    clusters (pairs on one prompt share a question, so they are not independent); each pair its own cluster when
    `clusters` is None."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must cover the same pairs, got {a.size} and {b.size}")
    if a.size == 0:
        nan = Estimate(math.nan, math.nan, math.nan)
        return PairedDifference(nan, 0, 0, math.nan, 0)
    labels = np.arange(a.size) if clusters is None else np.unique(np.asarray(clusters), return_inverse=True)[1]
    count = labels.max() + 1
    diff_sum = np.bincount(labels, weights=a - b, minlength=count)
    size = np.bincount(labels, minlength=count).astype(float)
    draws = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    replicates = diff_sum[draws].sum(axis=1) / size[draws].sum(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    a_only, b_only = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    return PairedDifference(Estimate(float(np.mean(a - b)), float(low), float(high)), a_only, b_only,
                            mcnemar_exact(a_only, b_only), int(count))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided p-value of McNemar's exact test: under equal accuracy, each discordant pair goes either way with
    probability 1/2."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(a_only, discordant, 0.5).pvalue)


def pairs_to_separate(p1: float, p2: float, confidence: float = CONFIDENCE, power: float = 0.8) -> float:
    """Pairs per model needed for a two-sided test at `confidence` to tell accuracies p1 and p2 apart with `power`
    (two independent proportions; a paired test on the same pairs needs no more). Infinite at a gap of 0."""
    gap = abs(p1 - p2)
    if not (math.isfinite(gap) and gap > 0):
        return math.inf
    z_alpha, z_beta = stats.norm.ppf(1 - (1 - confidence) / 2), stats.norm.ppf(power)
    mean = (p1 + p2) / 2
    spread = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return float(math.ceil((spread / gap) ** 2))
