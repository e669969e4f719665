"""The test split's verdict on fabricated per-pair scores with known answers: per-group table, regressions, drift
and the headline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tuner.evidence.verdict import (ALL_PAIRS, Scored, ScoredSplit, changed_pairs, closing_lines, found_something, group_table,
                           headline)


def scored(label: str, right: list[int], drift: float = 0.0, **extra) -> Scored:
    """Log-likelihoods that put chosen above rejected exactly where `right` says 1, shifted by `drift`."""
    right = np.asarray(right, dtype=float)
    return Scored(label, -1.0 + drift - 0.0 * right, -1.0 + drift + np.where(right == 1, -0.5, 0.5), **extra)


def split(base: list[int], trials: dict[str, list[int]], groups: list[str] | None = None,
          prompts_per_pair: int = 1, guard_groups: tuple = ()) -> ScoredSplit:
    n = len(base)
    pairs = pd.DataFrame({"pair_id": [f"p{i}" for i in range(n)],
                          "prompt": [f"question {i // prompts_per_pair}?" for i in range(n)],
                          "chosen": [f"right {i}" for i in range(n)], "rejected": [f"wrong {i}" for i in range(n)]})
    if groups is not None:
        pairs["group"] = groups
    return ScoredSplit(pairs, scored("base model", base),
                       [scored(t, r, trial_id=t, method="dpo", step=24) for t, r in trials.items()],
                       "kind" if groups is not None else None, guard_groups)


def test_group_table_counts_each_group_for_every_model():
    groups = ["fact"] * 4 + ["style"] * 4
    results = split(base=[1, 1, 0, 0, 0, 0, 0, 1], trials={"w": [1, 0, 0, 0, 1, 1, 1, 1], "r": [1] * 8},
                    groups=groups)
    table = group_table(results).set_index("kind")
    assert list(table.index) == ["fact", "style", ALL_PAIRS]
    assert table.loc["fact", "base model"] == 0.5 and table.loc["fact", "w"] == 0.25
    assert table.loc["style", "base model"] == 0.25 and table.loc["style", "w"] == 1.0
    assert table.loc[ALL_PAIRS, "r"] == 1.0 and table.loc[ALL_PAIRS, "pairs"] == 8
    assert list(table["pairs"]) == [4, 4, 8]


def test_regressions_and_improvements_are_the_pairs_that_changed():
    results = split(base=[1, 1, 0, 0, 1], trials={"w": [1, 0, 1, 0, 0]}, groups=list("aabba"))
    regressed, improved = changed_pairs(results)
    assert list(regressed["pair_id"]) == ["p1", "p4"]  # base right, winner wrong
    assert list(improved["pair_id"]) == ["p2"]  # base wrong, winner right
    assert list(regressed["group"]) == ["a", "a"]
    assert (regressed["base margin"] > 0).all() and (regressed["w margin"] < 0).all()


def test_unscored_pairs_leave_every_comparison():
    results = split(base=[1, 0, 1], trials={"w": [0, 1, 1]})
    results.trials[0].chosen[2] = math.nan  # truncated away for one model: compared on none
    assert results.mask.tolist() == [True, True, False]
    assert results.accuracy(results.base).value == 0.5
    assert group_table(results).loc[0, "pairs"] == 2


def test_drift_is_the_mean_log_ratio_to_the_base_model():
    results = split(base=[1, 0, 1, 0], trials={})
    results.trials = [scored("far", [1, 0, 1, 0], drift=-0.4), scored("near", [1, 0, 1, 0], drift=0.0)]
    assert results.drift(results.trials[0]) == pytest.approx(-0.4)
    assert results.drift(results.trials[1]) == pytest.approx(0.0)


def test_headline_says_not_distinguishable_when_the_interval_holds_zero():
    base = [1, 0] * 60
    winner = [0, 1] * 4 + [1, 0] * 56  # 4 fixed, 4 broken: same accuracy
    lines = headline(split(base, {"w": winner}, prompts_per_pair=6))
    text = "\n".join(lines)
    assert lines[0].startswith("Test split: 120 pairs on 20 prompts")
    assert "winner w (dpo, step 24): preference accuracy 0.500" in text
    assert "base model: preference accuracy 0.500" in text
    assert "paired bootstrap over 20 prompts; 4 pairs fixed, 4 broken" in text
    assert lines[-1] == "  verdict: the winner is not distinguishable from the base model on the test split"


def test_headline_says_better_or_worse_when_the_difference_is_clear():
    base = [1] * 60 + [0] * 60
    better = [1] * 60 + [1] * 40 + [0] * 20
    lines = headline(split(base, {"w": better}))
    assert "difference: +33.3 points [" in lines[3]
    assert lines[-1].startswith("  verdict: the winner is better than the base model on the test split, by")
    lines = headline(split(better, {"w": base}))
    assert lines[-1].startswith("  verdict: the winner is WORSE than the base model")


def test_closing_lines_end_with_the_headline():
    results = split(base=[1, 1, 0, 0] * 30, trials={"w": [1, 0, 1, 1] * 30, "x": [1] * 120},
                    groups=["a", "b", "c", "d"] * 30)
    lines = closing_lines(results)
    assert lines[-len(headline(results)):] == headline(results)
    assert any(line.startswith("regressions: 30 test pair(s) the base model gets right and the winner gets wrong; "
                               "60 the reverse") for line in lines)
    assert any(line.startswith("drift from the base model") for line in lines)
    assert "(all)" in "\n".join(lines)


def test_guard_groups_are_reported_apart_from_the_headline():
    groups = ["style"] * 60 + ["fact"] * 30
    base = [0] * 30 + [1] * 30 + [1] * 30
    better_style = [1] * 60
    held = split(base, {"w": better_style + [1] * 29 + [0]}, groups, guard_groups=("fact",))
    lines = headline(held)
    assert "searched on the 60 pairs outside the guard groups (fact)" in lines[1]
    assert "winner w (dpo, step 24): preference accuracy 1.000" in "\n".join(lines)  # the style pairs only
    assert any(line.startswith("  guard fact: winner 0.967, base model 1.000") and line.endswith("held")
               for line in lines)
    assert lines[-1].endswith("every guard group held") and found_something(held)
    worse = split(base, {"w": better_style + [1] * 20 + [0] * 10}, groups, guard_groups=("fact",))
    lines = headline(worse)
    assert any(line.startswith("  guard fact:") and line.endswith("WORSE") for line in lines)
    assert lines[-1].endswith("but WORSE on guard group(s) fact") and not found_something(worse)
    closing = closing_lines(worse)
    assert closing[-2].startswith("the search found nothing better than the base model")
    assert "guard group(s) fact got worse" in closing[-1] and "learning-rate" in closing[-1]


def test_a_search_that_found_nothing_says_so_and_what_to_change():
    base = [1, 0] * 60
    unmoved = split(base, {"w": list(base)})  # the winner equals the base model on every pair
    lines = closing_lines(unmoved)
    assert lines[-3] == "  verdict: the winner is not distinguishable from the base model on the test split"
    assert lines[-2].startswith("the search found nothing better than the base model")
    assert "barely moved" in lines[-1] and "train.max_steps" in lines[-1]
    moved = split(base, {"w": list(base)})
    moved.trials = [scored("w", [0, 1] * 3 + [1, 0] * 57, drift=-0.5, trial_id="w", method="dpo", step=24)]
    assert "changed too few test pairs to tell (3 fixed, 3 broken)" in closing_lines(moved)[-1]
    assert "raise the learning-rate range (search.space.train.learning_rate)" in lines[-1]
    unmoved.learning_rate_key = None  # fixed settings: the advice names the key that sets the rate
    assert closing_lines(unmoved)[-1].endswith("or raise train.learning_rate")
    unmoved.learning_rate_key = "ipo.train.learning_rate"  # a search across methods: the winner's own key
    assert closing_lines(unmoved)[-1].endswith("raise the learning-rate range (search.space.ipo.train.learning_rate)")


def test_a_search_whose_every_trial_broke_a_guard_says_so():
    results = split([1, 0] * 10, {}, groups=["style", "fact"] * 10, guard_groups=("fact",))
    lines = headline(results)
    assert lines[-2] == ("  no trial to compare: none reported a finite score on a report that held every guard "
                         "group")
    assert lines[-1].startswith("the search found nothing better than the base model: every trial")
    assert not found_something(results)


def test_the_last_lines_say_what_the_search_gained_over_the_users_baseline():
    n = 40
    base = [1] * 20 + [0] * 20
    results = split(base=base, trials={"w": [1] * 36 + [0] * 4}, prompts_per_pair=1)
    results.baseline = scored("baseline", base[:], trial_id="b1", method="dpo", step=24,
                              settings={"train.beta": 0.1, "train.learning_rate": 5e-6})
    lines = closing_lines(results)
    assert "and your baseline" in lines[0] and "baseline" in lines[1]  # its column in the group table
    assert lines[-3].startswith("  your baseline b1 (train.beta=0.1, train.learning_rate=5e-06, search.baseline): "
                                "preference accuracy 0.500")
    assert lines[-2].startswith("  winner minus your baseline: +40.0 points [") and "16 pairs fixed, 0 broken" in lines[-2]
    assert lines[-1].startswith("  against your baseline: the search gained ") and "over your own settings" in lines[-1]
    # a baseline as good as the winner: not distinguishable; better: the winner is WORSE than it
    results.baseline = scored("baseline", [1] * 36 + [0] * 4, trial_id="b1", settings={})
    assert "not distinguishable from your own settings" in closing_lines(results)[-1]
    results.baseline = scored("baseline", [1] * n, trial_id="b1", settings={})
    results.trials = [scored("w", [1] * 4 + [0] * 36, trial_id="w", method="dpo", step=24)]
    assert "WORSE than your own settings" in headline(results)[-1]
    # the baseline scored no pair that the others did: left out of every comparison, as a trial would be
    results.baseline.chosen[0] = math.nan
    assert not results.mask[0]


def test_a_search_across_methods_ends_with_each_methods_best_and_whether_the_gap_is_real():
    base = [1] * 20 + [0] * 20
    results = split(base=base, trials={"d1": [1] * 38 + [0] * 2, "o1": [1] * 24 + [0] * 16},
                    guard_groups=())
    results.trials[1].method = "orpo"
    results.method_bests = {"dpo": results.trials[0], "orpo": results.trials[1]}
    lines = headline(results)
    start = lines.index("  each method's best on the test split (searched groups; difference from the base model, "
                        "paired):")
    assert lines[start + 1].startswith("    dpo   d1 (the winner): 0.950 [") and "+45.0 points [" in lines[start + 1]
    assert lines[start + 2].startswith("    orpo  o1: 0.600 [") and "+10.0 points [" in lines[start + 2]
    assert lines[start + 3].startswith("  dpo won; against the best orpo: +35.0 points [")
    assert lines[start + 3].endswith(": a real difference")
    results.method_bests = {"dpo": results.trials[0]}  # one method: no table
    assert not any("each method's best" in line for line in headline(results))
