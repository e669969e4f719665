"""Intervals and paired tests on fabricated per-pair outcomes with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tuner.evidence import stats


def test_wilson_interval_known_values():
    # Textbook values (Newcombe 1998, Table I): 8/10 -> [0.490, 0.943]; 0/10 -> [0, 0.278]; all right is not [1, 1]
    eight = stats.wilson(8, 10)
    assert (eight.value, round(eight.low, 3), round(eight.high, 3)) == (0.8, 0.49, 0.943)
    zero = stats.wilson(0, 10)
    assert zero.low == pytest.approx(0, abs=1e-12) and round(zero.high, 3) == 0.278
    full = stats.wilson(24, 24)
    assert full.high == pytest.approx(1) and round(full.low, 3) == 0.862  # the default run's 24/24 "1.000"
    assert math.isnan(stats.wilson(0, 0).value)
    assert stats.accuracy([1, 1, 0, 1, 1, 1, 1, 1, 0, 1]) == eight


@pytest.mark.parametrize("n", [24, 100, 144])
def test_wilson_covers_the_true_accuracy_about_95_percent_of_the_time(n):
    # Exact coverage (sum of binomial probabilities of every k whose interval holds p), averaged over accuracies
    # like those a search sees, and a simulation of many binomial draws at one of them.
    intervals = [stats.wilson(k, n) for k in range(n + 1)]
    coverages = []
    for p in np.linspace(0.5, 0.95, 46):
        pmf = scipy_stats.binom.pmf(np.arange(n + 1), n, p)
        coverages.append(sum(q for q, i in zip(pmf, intervals) if i.low <= p <= i.high))
    assert 0.935 <= np.mean(coverages) <= 0.965
    assert min(coverages) >= 0.88
    draws = np.random.default_rng(0).binomial(n, 0.8, size=4000)
    simulated = np.mean([intervals[k].low <= 0.8 <= intervals[k].high for k in draws])
    assert 0.92 <= simulated <= 0.975


def test_paired_difference_excludes_zero_when_the_winner_fixes_many_pairs():
    base = [1] * 60 + [0] * 40
    winner = [1] * 60 + [1] * 30 + [0] * 10  # fixes 30, breaks none
    d = stats.paired_difference(winner, base)
    assert d.estimate.value == pytest.approx(0.30)
    assert d.estimate.low > 0.2 and d.estimate.high < 0.4
    assert (d.a_only, d.b_only) == (30, 0)
    assert d.p_value == pytest.approx(2 * 0.5 ** 30)
    assert d.distinguishable


def test_paired_difference_includes_zero_when_changes_cancel():
    base = [1, 0] * 50
    winner = [0, 1] * 5 + [1, 0] * 45  # 5 fixed, 5 broken
    d = stats.paired_difference(winner, base)
    assert d.estimate.value == 0 and d.estimate.contains(0)
    assert (d.a_only, d.b_only) == (5, 5) and d.p_value == pytest.approx(1.0)
    assert not d.distinguishable


def test_a_handful_of_changes_is_not_called_a_difference():
    # Five pairs fixed, none broken: the percentile bootstrap interval excludes 0, McNemar's exact test does not
    # (p = 2 / 2^5), and the verdict follows the cautious one.
    base = [1] * 90 + [0] * 10
    winner = [1] * 95 + [0] * 5
    d = stats.paired_difference(winner, base)
    assert d.estimate.low > 0 and d.p_value == pytest.approx(0.0625)
    assert not d.distinguishable


def test_resampling_whole_prompts_widens_the_interval_of_correlated_pairs():
    # Six pairs per prompt, all going the same way: 20 prompts of evidence, not 120 pairs.
    rng = np.random.default_rng(1)
    prompt_effect = rng.integers(-1, 2, size=20)
    winner = np.repeat((prompt_effect > 0).astype(int), 6)
    base = np.repeat((prompt_effect < 0).astype(int), 6)
    clusters = np.repeat(np.arange(20), 6)
    by_pair = stats.paired_difference(winner, base)
    by_prompt = stats.paired_difference(winner, base, clusters=clusters)
    assert by_prompt.estimate.value == pytest.approx(by_pair.estimate.value)
    width = lambda d: d.estimate.high - d.estimate.low  # noqa: E731
    assert width(by_prompt) > 1.8 * width(by_pair)
    assert by_prompt.clusters == 20 and by_pair.clusters == 120


def test_paired_difference_needs_the_same_pairs():
    with pytest.raises(ValueError, match="same pairs"):
        stats.paired_difference([1, 0], [1])
    assert math.isnan(stats.paired_difference([], []).estimate.value)


def test_pairs_to_separate_known_value_and_edges():
    # The classic sample size for 0.8 vs 0.9 at 5% two-sided and 80% power is 199 per group.
    assert stats.pairs_to_separate(0.9, 0.8) == 199
    assert stats.pairs_to_separate(0.8, 0.9) == 199
    assert stats.pairs_to_separate(0.75, 0.75) == math.inf
    # one pair in 24 (4.2 points) apart: far more pairs than the 24 that showed the gap
    assert stats.pairs_to_separate(0.8333, 0.7917) > 1000
