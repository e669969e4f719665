from __future__ import annotations

import math

import pandas as pd
import pytest

from tuner.experiment.ranking import UnknownMetric, rank_by_method, rank_trials
from tests.analysis.fabricated import frames


def test_ranks_by_best_and_by_last_report():
    trials, history = frames({"a": [0.1, 0.5, 0.2], "b": [0.3, 0.4, 0.45], "c": [0.0, 0.1, 0.05]})
    best = rank_trials(trials, history, "eval_rewards/margins", "max", "best")
    assert list(best["trial_id"]) == ["a", "b", "c"]
    assert list(best["rank"]) == [1, 2, 3]
    assert best.iloc[0]["score"] == 0.5 and best.iloc[0]["score_step"] == 4
    last = rank_trials(trials, history, "eval_rewards/margins", "max", "last")
    assert list(last["trial_id"]) == ["b", "a", "c"]
    lowest = rank_trials(trials, history, "eval_rewards/margins", "min", "best")
    assert list(lowest["trial_id"]) == ["c", "a", "b"]


def test_nan_and_infinite_values_never_rank_and_errored_trials_go_last():
    trials, history = frames({"ok": [0.1, 0.2], "nan": [math.nan, math.nan], "inf": [math.inf, 0.05],
                              "dead": [0.9]}, status={"dead": "errored"})
    history.loc[history["trial_id"] == "dead", "eval_rewards/margins"] = math.nan
    ranked = rank_trials(trials, history, "eval_rewards/margins", "max")
    assert list(ranked["trial_id"][:2]) == ["ok", "inf"]  # inf is skipped, its finite 0.05 counts
    assert ranked.iloc[1]["score"] == 0.05
    assert ranked["rank"].isna().sum() == 2
    assert set(ranked["trial_id"][2:]) == {"nan", "dead"}


def test_ties_break_on_fewer_steps_then_trial_id():
    trials, history = frames({"b": [0.5, 0.5], "a": [0.1, 0.5], "c": [0.5, 0.1]})
    ranked = rank_trials(trials, history, "eval_rewards/margins", "max")
    # b and c reach 0.5 at step 2, a only at step 4; b before c by id
    assert list(ranked["trial_id"]) == ["b", "c", "a"]
    assert list(rank_trials(trials.iloc[::-1], history.iloc[::-1], "eval_rewards/margins")["trial_id"]) == \
        ["b", "c", "a"]


def test_one_trial_and_margin_over_beta():
    trials, history = frames({"solo": [0.2, 0.4]}, betas={"solo": 0.2})
    ranked = rank_trials(trials, history, "eval_rewards/margins")
    assert len(ranked) == 1 and ranked.iloc[0]["rank"] == 1
    assert ranked.iloc[0]["margin/beta"] == pytest.approx(2.0)
    assert ranked.iloc[0]["accuracy_at_best"] == pytest.approx(0.7)


def test_unknown_metric_lists_reported_ones():
    trials, history = frames({"a": [0.1]})
    with pytest.raises(UnknownMetric) as caught:
        rank_trials(trials, history, "eval_reward_margin")
    assert "eval_rewards/margins" in str(caught.value) and "eval_loss" in str(caught.value)
    assert "trial_id" not in str(caught.value)


def test_bad_mode_and_scope():
    trials, history = frames({"a": [0.1]})
    with pytest.raises(ValueError, match="mode"):
        rank_trials(trials, history, "eval_loss", "up")
    with pytest.raises(ValueError, match="scope"):
        rank_trials(trials, history, "eval_loss", "max", "first")


def test_each_method_on_its_own_metric_and_together_on_eval_loss():
    dpo_trials, dpo_history = frames({"d1": [0.1, 0.3], "d2": [0.2, 0.2]})
    orpo_trials, orpo_history = frames({"o1": [-0.5, -0.4]}, method="orpo", metric="eval_log_odds_ratio")
    trials = pd.concat([dpo_trials, orpo_trials], ignore_index=True)
    history = pd.concat([dpo_history, orpo_history], ignore_index=True)
    rankings = rank_by_method(trials, history)
    assert set(rankings) == {"dpo", "orpo", "all"}
    assert list(rankings["dpo"]["trial_id"]) == ["d1", "d2"]
    assert rankings["orpo"].attrs["metric"] == "eval_log_odds_ratio"
    assert rankings["all"].attrs == {"metric": "eval_loss", "mode": "min", "scope": "best"}
    assert len(rankings["all"]) == 3


def test_report_rankings_with_and_without_a_search_metric():
    from tuner.experiment.ranking import rankings_for

    trials, history = frames({"d1": [0.1, 0.3], "d2": [0.2, 0.2]})
    history["eval_pref_accuracy"] = [0.5, 0.75, 0.5, 1.0]
    with_metric = rankings_for(trials, history, "eval_pref_accuracy", "max")
    assert list(with_metric) == ["all", "dpo"]
    assert list(with_metric["all"]["trial_id"]) == ["d2", "d1"]
    assert list(with_metric["dpo"]["trial_id"]) == ["d1", "d2"]  # by margin, its own default
    assert list(rankings_for(trials, history, "eval_rewards/margins", "max")) == ["all"]
    assert list(rankings_for(trials, history)) == ["dpo"]


def pref_ranking(scores: dict[str, float]):
    trials, history = frames({t: [s] for t, s in scores.items()}, metric="eval_pref_accuracy")
    return rank_trials(trials, history, "eval_pref_accuracy", "max")


def test_intervals_mark_the_trials_that_overlap_the_leader_as_tied():
    from tuner.experiment.ranking import add_intervals
    from tuner.evidence.stats import wilson

    # 24 eval pairs: 24/24, 23/24 and 19/24 overlap the leader's [0.86, 1]; 12/24 does not
    ranked = add_intervals(pref_ranking({"a": 1.0, "b": 23 / 24, "c": 19 / 24, "d": 0.5}), pairs=24)
    assert list(ranked["trial_id"]) == ["a", "b", "c", "d"]
    assert list(ranked["tied"]) == [False, True, True, False]
    assert ranked.iloc[0]["ci_low"] == pytest.approx(wilson(24, 24).low)
    assert ranked.iloc[3]["ci_high"] == pytest.approx(wilson(12, 24).high)
    assert ranked.iloc[3]["ci_high"] < ranked.iloc[0]["ci_low"]
    assert ranked.attrs["pairs"] == 24 and ranked.attrs["pairs_to_separate"] > 24
    assert ranked.attrs["metric"] == "eval_pref_accuracy"


def test_per_pair_outcomes_give_the_interval_when_a_checkpoint_saved_them():
    from tuner.experiment.ranking import add_intervals
    from tuner.evidence.stats import accuracy

    outcomes = {"a": [1] * 90 + [0] * 10, "b": [1] * 60 + [0] * 40}
    ranked = add_intervals(pref_ranking({"a": 0.9, "b": 0.6}), pairs=None, outcomes=outcomes)
    assert ranked.iloc[1]["ci_high"] == pytest.approx(accuracy(outcomes["b"]).high)
    assert list(ranked["tied"]) == [False, False] and ranked.attrs["pairs"] == 100


def test_no_interval_for_a_metric_that_is_not_a_share_of_pairs():
    from tuner.experiment.ranking import add_intervals

    trials, history = frames({"a": [0.5], "b": [0.4]})
    ranked = add_intervals(rank_trials(trials, history, "eval_rewards/margins"), pairs=24)
    assert "tied" not in ranked and "ci_low" not in ranked


def test_ranking_table_shows_the_interval_and_the_tie_marks():
    from tuner.experiment.ranking import add_intervals
    from tuner.experiment.tables import describe_uncertainty, display_frame

    ranked = add_intervals(pref_ranking({"a": 1.0, "b": 23 / 24, "c": 0.5}), pairs=24)
    shown = display_frame(ranked)
    assert list(shown["tied"]) == ["leader", "tied", ""]
    assert shown["95% CI"].iloc[0] == "[0.86, 1.00]"
    line = describe_uncertainty(ranked)
    assert line.startswith("1 trial(s) tied with the leader") and "24 eval pairs" in line
    assert "would take about" in line


def test_preference_accuracy_ties_break_on_the_margin_not_on_order():
    trials, history = frames({"a": [0.75, 0.75], "b": [0.75, 0.75], "c": [0.5, 0.5]}, metric="eval_pref_accuracy")
    margins = {("a", 1): 0.10, ("a", 2): 0.20, ("b", 1): 0.30, ("b", 2): 0.25, ("c", 1): 0.9, ("c", 2): 0.9}
    history["eval_pref_margin"] = [margins[(t, i)] for t, i in zip(history["trial_id"], history["training_iteration"])]
    ranked = rank_trials(trials, history, "eval_pref_accuracy", "max")
    assert list(ranked["trial_id"]) == ["b", "a", "c"]  # b's larger margin wins the tie; c's never beats accuracy
    assert ranked.iloc[0]["margin_at_best"] == 0.30 and ranked.iloc[0]["score_step"] == 2  # b's report 1
    assert ranked.iloc[1]["score_step"] == 4  # a's later report has the larger margin
    from tuner.experiment.ranking import add_intervals
    from tuner.experiment.tables import describe_uncertainty

    line = describe_uncertainty(add_intervals(ranked, 24))
    assert "the top two score the same" in line and "(the leader's larger eval_pref_margin, 0.300 vs 0.200" in line


def test_a_trial_that_breaks_a_guard_never_wins():
    """A scripted search in which the best-scoring trial breaks a guard group: it is listed, unranked, and the
    winner is the best trial that held every guard, scored on a report that held it."""
    trials, history = frames({"best": [0.9, 0.95], "safe": [0.7, 0.8], "late": [0.75, 0.85]},
                             metric="eval_pref_accuracy")
    broken = {("best", 1): 1, ("best", 2): 1, ("safe", 1): 0, ("safe", 2): 0, ("late", 1): 0, ("late", 2): 2}
    history["eval_guard_broken"] = [broken[(t, i)] for t, i in zip(history["trial_id"], history["training_iteration"])]
    ranked = rank_trials(trials, history, "eval_pref_accuracy", "max")
    assert list(ranked["trial_id"]) == ["safe", "late", "best"]
    assert ranked.iloc[0]["rank"] == 1 and ranked.iloc[0]["score"] == 0.8
    assert ranked.iloc[1]["score"] == 0.75 and ranked.iloc[1]["guard"] == "held (some reports)"  # its guarded report
    assert math.isnan(ranked.iloc[2]["rank"]) and ranked.iloc[2]["guard"] == "broken"


def test_a_search_whose_every_trial_broke_a_guard_names_no_best_trial():
    from tuner.experiment.tables import describe_best

    trials, history = frames({"a": [0.9], "b": [0.8]}, metric="eval_pref_accuracy")
    history["eval_guard_broken"] = 1.0
    ranked = rank_trials(trials, history, "eval_pref_accuracy", "max")
    assert ranked["rank"].isna().all() and describe_best(ranked).startswith("no trial to rank: 2 fell below")


def test_keys_scoped_to_another_method_are_blank_in_the_trial_table_and_the_best_config():
    from tuner.experiment.results import _trial_row
    from tuner.experiment.tables import describe_best

    config = {"method": "dpo", "dpo.train.beta": 0.2, "orpo.train.beta": 6.0, "lora.r": 8}
    trial = {"trial_id": "a", "status": "TERMINATED", "config": config, "path": "a", "error_file": None}
    frame = pd.DataFrame({"step": [10], "max_steps": [10]})
    row = _trial_row(None, trial, {}, frame, "dpo", lambda method: 0.1)
    assert row["beta"] == 0.2  # the value the DPO trial ran with, not ORPO's sample
    assert row["config/dpo.train.beta"] == 0.2 and "config/orpo.train.beta" not in row
    ranked = pd.DataFrame([{"rank": 1, "trial_id": "a", "score": 0.9, "score_step": 10, "method": "dpo",
                            "config/dpo.train.beta": 0.2, "config/orpo.train.beta": math.nan}])
    assert "orpo.train.beta" not in describe_best(ranked) and "'dpo.train.beta': 0.2" in describe_best(ranked)


def test_a_searched_method_is_shown_once():
    from tuner.experiment.tables import ranking_columns

    ranked = pd.DataFrame([{"rank": 1, "trial_id": "a", "method": "dpo", "status": "finished", "score": 0.9,
                            "score_step": 10, "config/method": "dpo", "config/dpo.train.beta": 0.2}])
    assert ranking_columns(ranked).count("method") == 1 and "config/dpo.train.beta" in ranking_columns(ranked)


def test_repeats_over_training_seeds_give_the_noise_floor_per_setting():
    from tuner.experiment.tables import describe_repeats

    ranked = pref_ranking({"a": 0.6, "b": 0.7, "c": 0.65, "d": 0.9, "e": 0.8})
    settings = {"a": 0.1, "b": 0.1, "c": 0.1, "d": 0.2, "e": 0.3}
    ranked["config/train.beta"] = ranked["trial_id"].map(settings)
    assert describe_repeats(ranked) == []  # no seed column: not repeats
    ranked["config/train.seed"] = ranked["trial_id"].map({"a": 0, "b": 1, "c": 2, "d": 0, "e": 0})
    head, line = describe_repeats(ranked)
    assert head.startswith("noise floor: the same settings over training seeds, eval_pref_accuracy per seed")
    assert line == "  3 seeds of {'train.beta': 0.1}: 0.6 to 0.7 (mean 0.65, sd 0.05)"  # beta 0.2, 0.3: one seed each
    ranked.loc[ranked["trial_id"] == "b", ["rank", "score"]] = math.nan  # a guard broke: unranked
    assert describe_repeats(ranked)[1] == ("  3 seeds of {'train.beta': 0.1}: 0.6 to 0.65 (mean 0.625, sd 0.035); "
                                           "1 unranked (guard broken or no finite score)")


def test_one_trial_of_fixed_settings_is_tied_with_nothing_and_named_by_the_spec():
    from tuner.experiment.ranking import add_intervals
    from tuner.experiment.tables import describe_best, describe_uncertainty

    ranked = add_intervals(pref_ranking({"only": 0.75}), pairs=24)
    assert describe_uncertainty(ranked) is None
    assert describe_best(ranked.drop(columns=[c for c in ranked if c.startswith("config/")])).endswith(
        "the spec's own settings (nothing searched)")
