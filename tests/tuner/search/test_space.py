"""A search that samples nothing (tuner.search.space.planned_trials): fixed settings, choices of one value and grids
run as listed trials, whatever search.algorithm says; repeats of the same settings train on the next seeds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tuner.search import build, searchers
from tuner.search import space as search_space
from tuner.spec import validate_spec

BETA_GRID = {"train.beta": {"type": "grid", "values": [0.1, 0.2]}}


def spec_with(search: dict, **sections):
    return validate_spec({"search": search, **sections})


@pytest.mark.parametrize("algorithm", ["optuna", "random", "grid"])
def test_no_space_is_one_trial_of_the_fixed_settings_whatever_the_algorithm(algorithm):
    spec = spec_with({"algorithm": algorithm, "num_samples": 1}, train={"beta": 0.1, "learning_rate": 5e-6})
    assert spec.search.samples_nothing() and not spec.search.uses_optuna()
    assert search_space.planned_trials(spec) == [{}]
    assert search_space.param_space(spec) == {}
    searcher = build.build_searcher(spec, SimpleNamespace(uri="unused", name="unused"))
    assert isinstance(searcher, searchers.PauseAwareVariantGenerator)  # never Optuna, which needs a space
    assert search_space.describe_space(spec).splitlines()[0].startswith("search: fixed settings, 1 trial(s)")


def test_repeats_of_fixed_settings_train_on_the_next_seeds_from_trls_own_default():
    spec = spec_with({"num_samples": 3})  # train.seed left to TRL's DPOConfig
    first = spec.trl_args().seed
    assert search_space.planned_trials(spec) == [{"train.seed": first + i} for i in range(3)]
    spec = spec_with({"num_samples": 3}, train={"seed": 7})
    assert [c["train.seed"] for c in search_space.planned_trials(spec)] == [7, 8, 9]
    assert search_space.shown_keys(spec) == ["train.seed"]
    description = search_space.describe_space(spec)
    assert "the settings run 3 times, on training seeds 7, 8, 9 (train.seed)" in description
    assert "Optuna has nothing to choose" in description


def test_choices_of_one_value_are_fixed_settings_applied_to_every_trial():
    spec = spec_with({"num_samples": 2, "space": {"train.beta": {"type": "choice", "values": [0.2]},
                                                  "lora.r": {"type": "choice", "values": [4, 4]}}}, train={"seed": 0})
    assert spec.search.samples_nothing()
    planned = search_space.planned_trials(spec)
    assert planned == [{"train.beta": 0.2, "lora.r": 4, "train.seed": 0}, {"train.beta": 0.2, "lora.r": 4, "train.seed": 1}]
    # every key of the listed trials is a Tune domain that holds their values, so Tune takes each as a valid point
    assert all(domain.is_valid(config[key]) for config in planned for key, domain in search_space.param_space(spec).items())
    assert not spec_with({"space": {"train.beta": {"type": "choice", "values": [0.1, 0.2]}}}).search.samples_nothing()


def test_a_grid_listed_in_points_to_evaluate_runs_each_cell_once():
    points = [{"train.beta": 0.1}, {"train.beta": 0.2}]
    spec = spec_with({"algorithm": "grid", "num_samples": 1, "space": BETA_GRID, "points_to_evaluate": points})
    assert search_space.planned_trials(spec) == [{"train.beta": 0.1}, {"train.beta": 0.2}]
    # one more sample than points: a pass over the grid, whose cells repeat the points on the next seed
    spec = spec_with({"algorithm": "grid", "num_samples": 3, "space": BETA_GRID, "points_to_evaluate": points},
                     train={"seed": 0})
    assert search_space.planned_trials(spec) == [{"train.beta": 0.1, "train.seed": 0}, {"train.beta": 0.2, "train.seed": 0},
                                                 {"train.beta": 0.1, "train.seed": 1}, {"train.beta": 0.2, "train.seed": 1}]


def test_a_point_that_leaves_a_grid_key_out_runs_over_its_values_as_tune_does():
    space = {**BETA_GRID, "train.learning_rate": {"type": "grid", "values": [1e-4, 2e-4]}}
    spec = spec_with({"algorithm": "random", "num_samples": 2, "space": space,
                      "points_to_evaluate": [{"train.beta": 0.3}]})
    planned = search_space.planned_trials(spec)
    assert planned[:2] == [{"train.beta": 0.3, "train.learning_rate": 1e-4}, {"train.beta": 0.3, "train.learning_rate": 2e-4}]
    assert len(planned) == 2 + 4 and "train.seed" not in planned[0]  # the second sample: one pass over the 4 cells


def test_a_searched_seed_is_kept_and_a_repeat_moves_past_the_seeds_taken():
    space = {"train.seed": {"type": "grid", "values": [0, 1]}}
    spec = spec_with({"algorithm": "grid", "num_samples": 2, "space": space})
    assert [c["train.seed"] for c in search_space.planned_trials(spec)] == [0, 1, 2, 3]


def test_sampled_spaces_are_left_to_tune_and_optuna():
    spec = spec_with({"space": {"train.beta": {"type": "loguniform", "low": 0.05, "high": 0.5}}})
    assert search_space.planned_trials(spec) is None and spec.search.uses_optuna()
    assert search_space.races_trials(spec)


def test_repeats_of_one_setting_are_not_raced_but_a_broken_guard_still_stops_a_trial():
    from ray.tune.schedulers import TrialScheduler

    spec = spec_with({"num_samples": 2, "guard_groups": ["wrong_fact"]}, train={"max_steps": 16, "eval_steps": 4})
    assert not search_space.races_trials(spec)
    asha = build.build_scheduler(spec, 100)
    assert asha.first_rung == 4 and not asha.pause_at_first_rung  # its only rung is the last round
    asha.set_search_properties("eval_pref_accuracy", "max")
    trials = [SimpleNamespace(trial_id=name) for name in ("lucky", "unlucky", "broken")]
    controller = SimpleNamespace(search_alg=SimpleNamespace(searcher=SimpleNamespace(paused_trials=set())))
    for trial in trials:
        asha.on_trial_add(controller, trial)
    report = {"training_iteration": 1, "step": 4, "max_steps": 16}
    assert asha.on_trial_result(controller, trials[0], {**report, "eval_pref_accuracy": 0.9}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(controller, trials[1], {**report, "eval_pref_accuracy": 0.1}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(controller, trials[2], {**report, "eval_pref_accuracy": 0.9,
                                                        "eval_guard_broken": 1.0}) == TrialScheduler.STOP
    assert "scheduler: none between the repeats" in search_space.describe_space(spec)
    # a grid of settings is raced as configured
    grid = spec_with({"algorithm": "grid", "num_samples": 2, "space": BETA_GRID})
    assert search_space.races_trials(grid) and build.build_scheduler(grid, 100).pause_at_first_rung
