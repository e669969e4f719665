"""The baseline trial (search.baseline): one trial at the user's own settings beside the search, its config, its
place in Tune's samples, the searcher that runs it first, the scheduler that never races it, and the spec checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from tuner.search import build, searchers
from tuner.search import space as search_space
from tuner.spec import BASELINE_KEY, SpecError, validate_spec, with_sampled

SPACE = {"train.beta": {"type": "loguniform", "low": 0.05, "high": 0.5},
         "train.learning_rate": {"type": "loguniform", "low": 5e-5, "high": 1e-3},
         "lora.r": {"type": "choice", "values": [4, 8, 16]}}


def spec_with(baseline, space=SPACE, **search):
    return validate_spec({"search": {"space": space, "baseline": baseline, "num_samples": 4, **search},
                          "train": {"learning_rate": 3e-4}, "lora": {"r": 8}})


def test_the_baseline_takes_the_values_it_gives_and_the_spec_own_values_for_the_other_searched_keys():
    spec = spec_with({"train.beta": 0.1, "train.learning_rate": 5e-6})
    assert search_space.baseline_config(spec) == {"train.beta": 0.1, "train.learning_rate": 5e-6, "lora.r": 8,
                                                  BASELINE_KEY: True}
    # `true`: every searched key as the spec has it: the train section's, else TRL's DPOConfig default
    spec = spec_with(True)
    assert search_space.baseline_config(spec) == {"train.beta": spec.trl_args().beta, "train.learning_rate": 3e-4,
                                                  "lora.r": 8, BASELINE_KEY: True}
    assert spec_with(False).search.baseline is None and search_space.baseline_config(spec_with(None)) is None


def test_the_baseline_is_one_more_sample_first_in_tunes_order():
    spec = spec_with({"train.beta": 0.1}, algorithm="random")
    assert search_space.trial_count(spec) == 5 and search_space.trial_count(spec_with(None)) == 4
    assert search_space.param_space(spec)[BASELINE_KEY] is False  # the search's own trials say so
    assert BASELINE_KEY not in search_space.param_space(spec_with(None))
    generator = build.build_searcher(spec, SimpleNamespace(uri="unused", name="unused"))
    assert generator._points_to_evaluate[0] == search_space.baseline_config(spec)
    assert "baseline: one more trial at train.beta=0.1, train.learning_rate=0.0003, lora.r=8" in \
        search_space.describe_space(spec)


def test_a_trial_applies_the_baseline_settings_never_the_marker():
    spec = spec_with(True)
    trial_spec = with_sampled(spec, search_space.baseline_config(spec))
    assert trial_spec.lora.r == 8 and trial_spec.train["learning_rate"] == 3e-4


class RecordingSearcher(Searcher):
    def __init__(self):
        super().__init__(metric="m", mode="max")
        self.suggested, self.told = [], []

    def suggest(self, trial_id):
        self.suggested.append(trial_id)
        return {"train.beta": 0.3}

    def on_trial_result(self, trial_id, result):
        self.told.append(("result", trial_id))

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append(("complete", trial_id))

    def save(self, checkpoint_path):
        with open(checkpoint_path, "w") as f:
            f.write(",".join(self.suggested))

    def restore(self, checkpoint_path):
        with open(checkpoint_path) as f:
            self.suggested = f.read().split(",")


def test_the_searcher_runs_the_baseline_first_and_never_tells_the_wrapped_searcher_of_it(tmp_path):
    from ray.tune.search import SearchGenerator

    inner = RecordingSearcher()
    wrapped = searchers.BaselineFirst(inner, {"train.beta": 0.1, BASELINE_KEY: True})
    assert wrapped.suggest("a") == {"train.beta": 0.1, BASELINE_KEY: True}
    assert wrapped.suggest("b") == {"train.beta": 0.3} and inner.suggested == ["b"]
    for trial in ("a", "b"):
        wrapped.on_trial_result(trial, {"m": 1})
        wrapped.on_trial_complete(trial, {"m": 1})
    assert inner.told == [("result", "b"), ("complete", "b")]
    # saved and restored as Tune does (--resume, into a searcher built afresh): the baseline is not run twice
    SearchGenerator(wrapped).save_to_dir(str(tmp_path), "s")
    again = searchers.BaselineFirst(RecordingSearcher(), {"train.beta": 0.1, BASELINE_KEY: True})
    SearchGenerator(again).restore_from_dir(str(tmp_path))
    assert again.baseline_trial == "a" and again.searcher.suggested == ["b"]
    assert again.suggest("c") == {"train.beta": 0.3}


def test_optuna_searches_get_the_baseline_through_the_wrapper(tmp_path):
    spec = spec_with({"train.beta": 0.1})
    (tmp_path / "tuner").mkdir()
    searcher = build.build_searcher(spec, SimpleNamespace(uri=str(tmp_path), name="unused"))
    assert isinstance(searcher.searcher, searchers.BaselineFirst)
    assert isinstance(searcher.searcher.searcher, searchers.ResumableOptunaSearch)


def test_asha_never_races_or_stops_the_baseline():
    from tuner.evidence.quality import GUARD_BROKEN
    from tuner.search.scheduler import NanSafeASHA

    scheduler = NanSafeASHA(time_attr="training_iteration", metric="m", mode="max", max_t=4, grace_period=1,
                            reduction_factor=2)
    trial = SimpleNamespace(trial_id="a", config={BASELINE_KEY: True})
    broken = {"training_iteration": 1, "m": 0.0, GUARD_BROKEN: 1.0, "step": 2, "max_steps": 4}
    assert scheduler.on_trial_result(None, trial, broken) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trial, {**broken, "step": 4}) == TrialScheduler.CONTINUE
    assert "a" in scheduler.ending


@pytest.mark.parametrize("baseline, why", [
    ({"train.bta": 0.1}, "search.baseline: keys must be searched keys"),
    ({"train.beta": "high"}, "search.baseline.train.beta: "),
])
def test_a_wrong_baseline_is_one_line_naming_its_path(baseline, why):
    with pytest.raises(SpecError) as raised:
        spec_with(baseline)
    assert [p for p in raised.value.problems if p.startswith(why)], raised.value.problems


def test_a_baseline_without_a_space_is_refused():
    with pytest.raises(SpecError) as raised:
        spec_with(True, space={})
    assert raised.value.problems == ["search.baseline: the search has no space, so its one setting is the baseline "
                                     "already; add a search.space to compare a search with it, got baseline True"]
