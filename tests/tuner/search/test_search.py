"""Pausing at the first rung (tuner.search): the scheduler and the running-trial limit, on fake Tune state and in a
real Tune search of scripted trials."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuner.search import build, searchers
from tuner.search import space as search_space
from tuner.spec import validate_spec

PREF = "eval_pref_accuracy"
BETA = {"train.beta": {"type": "loguniform", "low": 0.05, "high": 0.5}}  # a searched key: ASHA races the trials


class FakeTrial:
    def __init__(self, trial_id: str, status: str = "RUNNING", last_result: dict | None = None):
        self.trial_id, self.status = trial_id, status
        self.last_result = {"trial_id": trial_id, **(last_result or {})}  # Tune's always holds the id

    def set_status(self, status: str) -> None:
        self.status = status


class RecordingSearcher:
    def __init__(self, paused=()):
        self.paused_trials = set(paused)
        self.paused, self.unpaused, self.completed = [], [], []

    def on_pause(self, trial_id):
        self.paused.append(trial_id)

    def on_unpause(self, trial_id):
        self.unpaused.append(trial_id)

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, (result or {}).get(PREF)))


class FakeSearchAlg:
    def __init__(self, searcher, finished: bool):
        self.searcher, self.finished = searcher, finished

    def is_finished(self) -> bool:
        return self.finished

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.searcher.on_trial_complete(trial_id, result, error)


class FakeController:
    """The part of Tune's controller a scheduler sees (TrialRunnerWrapper's whitelist)."""

    def __init__(self, trials, searcher=None, finished=False):
        self.trials, self.stopped = trials, []
        self.search_alg = FakeSearchAlg(searcher or RecordingSearcher(), finished)

    def get_trials(self):
        return self.trials

    def stop_trial(self, trial):  # as Tune stops a paused trial: the searcher hears of it without a result
        self.stopped.append(trial.trial_id)
        trial.status = "TERMINATED"
        self.search_alg.on_trial_complete(trial.trial_id)


def scheduler_with(names, controller=None, **scheduler):
    spec = validate_spec({"scheduler": {"grace_period": 1, "reduction_factor": 2, **scheduler},
                          "train": {"max_steps": 16}, "search": {"space": BETA}})
    asha = build.build_scheduler(spec, 100)
    asha.set_search_properties(PREF, "max")
    trials = [FakeTrial(name) for name in names]
    for trial in trials:
        asha.on_trial_add(controller or FakeController([]), trial)
    return asha, trials


def result(iteration: int, score: float, step: int | None = None) -> dict:
    return {"training_iteration": iteration, PREF: score, "step": step or iteration * 4, "max_steps": 16}


def test_a_trial_pauses_at_the_first_rung_while_configurations_wait():
    from ray.tune.schedulers import TrialScheduler

    asha, (first, second) = scheduler_with(["first", "second"])
    searcher = RecordingSearcher()
    waiting = FakeController([first, second], searcher, finished=False)
    assert asha.on_trial_result(waiting, first, result(1, 0.8)) == TrialScheduler.PAUSE
    assert searcher.paused == ["first"]  # the running-trial limit counts it out
    # Past the first rung (a resumed trial), or at a trial's last step, it goes on.
    assert asha.on_trial_result(waiting, first, result(2, 0.9)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(waiting, second, result(1, 0.9, step=16)) == TrialScheduler.CONTINUE
    assert searcher.paused == ["first"]


def test_no_pause_once_every_configuration_has_started_or_when_turned_off():
    from ray.tune.schedulers import TrialScheduler

    asha, (first,) = scheduler_with(["first"])
    assert asha.on_trial_result(FakeController([first], finished=True), first, result(1, 0.8)) == \
        TrialScheduler.CONTINUE
    pending = FakeTrial("pending", status="PENDING")  # created, waiting for a place: still waiting
    asha, (first,) = scheduler_with(["first"])
    assert asha.on_trial_result(FakeController([first, pending], finished=True), first, result(1, 0.8)) == \
        TrialScheduler.PAUSE
    returning = FakeTrial("returning", status="PENDING", last_result=result(1, 0.5))  # a paused one, resuming
    asha, (first,) = scheduler_with(["first"])
    assert asha.on_trial_result(FakeController([first, returning], finished=True), first, result(1, 0.8)) == \
        TrialScheduler.CONTINUE
    asha, (first,) = scheduler_with(["first"], pause_at_first_rung=False)
    assert asha.on_trial_result(FakeController([first]), first, result(1, 0.8)) == TrialScheduler.CONTINUE


def test_paused_trials_wait_for_new_configurations_then_are_judged_against_every_first_score():
    asha, trials = scheduler_with(["early_low", "early_high", "late_a", "late_b"])
    early_low, early_high, late_a, late_b = trials
    searcher = RecordingSearcher()
    controller = FakeController(trials, searcher, finished=False)
    asha.on_trial_result(controller, early_low, result(1, 0.2))  # first at the rung: ASHA alone lets it pass
    asha.on_trial_result(controller, early_high, result(1, 0.9))
    early_low.status = early_high.status = "PAUSED"
    early_low.last_result.update(result(1, 0.2))
    late_a.status = "PENDING"
    assert asha.choose_trial_to_run(controller) is late_a  # a new configuration first
    late_a.status = "RUNNING"
    assert asha.choose_trial_to_run(controller) is None  # the searcher has more: the paused ones wait
    controller.search_alg.finished = True
    asha.on_trial_result(controller, late_a, result(1, 0.6))
    asha.on_trial_result(controller, late_b, result(1, 0.7))
    assert asha.choose_trial_to_run(controller) is None  # two running: search.max_concurrent_trials
    asha.on_trial_result(controller, late_b, result(4, 0.7, step=16))  # its last report: its place is free
    # The rung now holds 0.2, 0.9, 0.6, 0.7 (cutoff 0.65): the early low one ends where it paused, and the
    # searcher gets its score with the end (Optuna records a completed trial, not a pruned one without a value).
    assert asha.choose_trial_to_run(controller) is early_high
    assert controller.stopped == ["early_low"]
    assert searcher.unpaused == ["early_high"] and searcher.completed[0] == ("early_low", 0.2)


def test_resume_keeps_a_trial_paused_and_judges_it_on_its_first_rung_score():
    """--resume requeues every unfinished trial as pending, and ASHA's rungs start empty."""
    searcher = RecordingSearcher(paused=["paused_low", "paused_high"])
    restored = [FakeTrial("paused_low", "PENDING", result(1, 0.2)), FakeTrial("paused_high", "PENDING", result(1, 0.9)),
                FakeTrial("was_running", "PENDING", result(2, 0.7))]
    controller = FakeController(restored, searcher, finished=True)
    asha, _ = scheduler_with([])
    for trial in restored:
        asha.on_trial_add(controller, trial)
    assert [trial.status for trial in restored] == ["PAUSED", "PAUSED", "PENDING"]
    assert asha.choose_trial_to_run(controller) is restored[2]
    restored[2].status = "RUNNING"
    assert asha.choose_trial_to_run(controller) is restored[1]  # 0.2 is below the cutoff of 0.2 and 0.9
    assert controller.stopped == ["paused_low"]


@pytest.mark.parametrize("algorithm", ["optuna", "grid"])
def test_the_running_trial_limit_counts_paused_trials_out(algorithm, tmp_path):
    from ray import tune

    from tuner.experiment.checks import check_storage
    from tuner.experiment.folder import Experiment

    space = ({"train.beta": {"type": "grid", "values": [0.1, 0.2, 0.3]}} if algorithm == "grid"
             else {"train.beta": {"type": "uniform", "low": 0.1, "high": 0.5}})
    spec = validate_spec({"search": {"algorithm": algorithm, "num_samples": 3, "max_concurrent_trials": 2,
                                     "space": space}})
    experiment = Experiment.create(spec, check_storage(str(tmp_path), "limit"))
    searcher = build.build_searcher(spec, experiment)
    searcher.set_search_properties(PREF, "max", search_space.param_space(spec))
    if algorithm == "optuna":
        ids = iter(f"trial-{n}" for n in range(10))

        def next_trial():  # what Tune's SearchGenerator asks of the limiter
            trial_id = next(ids)
            return trial_id if searcher.suggest(trial_id) is not None else None
    else:
        tune.register_trainable("tuner-test-noop", lambda config: None)
        searcher.add_configurations({"limit": {"run": "tuner-test-noop", "config": search_space.param_space(spec)}})

        def next_trial():
            trial = searcher.next_trial()
            return trial.trial_id if trial is not None else None

    first, second = next_trial(), next_trial()
    assert first is not None and second is not None
    assert next_trial() is None  # two running: the limit
    searcher.on_pause(first)
    third = next_trial()
    assert third is not None  # the paused one's place went to a new configuration
    searcher.on_unpause(first)
    assert next_trial() is None  # three running again: the limit holds until two remain
    searcher.on_trial_complete(second, result={PREF: 0.5, "training_iteration": 1})
    assert next_trial() is None  # two running
    searcher.on_pause(third)
    searcher.on_trial_complete(third, result={PREF: 0.5, "training_iteration": 1})  # a paused trial can end
    assert not searcher.paused_trials
    searcher.on_trial_complete(first, result={PREF: 0.5, "training_iteration": 1})
    assert not searcher._live()


# ----------------------------------------------------------------------------------------------- a real search

# First-rung score of each configuration (train.beta); each later report adds 0.01.
FIRST_SCORES = {0.1: 0.1, 0.2: 0.9, 0.3: 0.5, 0.4: 0.6, 0.5: 0.7}


def scripted_resumable_trial(config, *, events: str):
    """Three reports with checkpoints; resumes from its checkpoint as tuner's trainable does. Writes when it
    (re)starts and each report, before reporting (a paused trial's report never returns)."""
    from ray import tune

    beta = config["train.beta"]
    checkpoint = tune.get_checkpoint()
    done = json.loads(Path(checkpoint.to_directory(), "step.json").read_text())["step"] if checkpoint else 0

    def note(**event):
        with open(events, "a") as handle:
            handle.write(json.dumps({"beta": beta, "time": time.time(), **event}) + "\n")

    note(event="start", from_step=done)
    for step in range(done + 1, 4):
        time.sleep(0.3)
        note(event="report", step=step)
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "step.json").write_text(json.dumps({"step": step}))
            tune.report({PREF: FIRST_SCORES[beta] + 0.01 * (step - 1), "step": step, "max_steps": 3},
                        checkpoint=tune.Checkpoint.from_directory(folder))


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ["optuna", "grid"])
def test_a_real_search_scores_every_configuration_before_any_trial_trains_past_the_first_rung(algorithm, tmp_path,
                                                                                              monkeypatch):
    import ray
    from ray import tune

    from tuner.experiment.checks import check_storage
    from tuner.experiment.folder import Experiment

    betas = list(FIRST_SCORES)
    space = ({"train.beta": {"type": "grid", "values": betas}} if algorithm == "grid"
             else {"train.beta": {"type": "choice", "values": betas}})
    points = [{"train.beta": beta} for beta in betas] if algorithm == "optuna" else []
    # One trial at a time on two CPUs: only the running-trial limit (which must count paused trials out, or the
    # search deadlocks) keeps a second one from starting.
    spec = validate_spec({"search": {"algorithm": algorithm, "num_samples": 5 if algorithm == "optuna" else 1,
                                     "max_concurrent_trials": 1, "metric": PREF, "space": space,
                                     "points_to_evaluate": points},
                          "scheduler": {"grace_period": 1, "reduction_factor": 2, "max_t": 3},
                          "train": {"max_steps": 3, "eval_steps": 1}})
    experiment = Experiment.create(spec, check_storage(str(tmp_path / "results"), "paused"))
    events = tmp_path / "events.jsonl"
    # Tune saves the search's state after every step, as it does at its own pace in a search of minutes: a trial
    # that ends where it paused is saved as ended, not as the paused trial an earlier save held.
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tune.Tuner(
            tune.with_resources(tune.with_parameters(scripted_resumable_trial, events=str(events)), {"cpu": 1}),
            param_space=search_space.param_space(spec),
            tune_config=tune.TuneConfig(metric=PREF, mode="max", search_alg=build.build_searcher(spec, experiment),
                                        scheduler=build.build_scheduler(spec, 100),
                                        num_samples=spec.search.num_samples, reuse_actors=True,
                                        time_budget_s=120),  # a deadlock ends, and fails the asserts below
            run_config=tune.RunConfig(name="paused", storage_path=str(tmp_path / "tune"), verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    if algorithm == "optuna":  # the trials ended where they paused are scored in the study, as ASHA's stops are
        import optuna

        study = optuna.load_study(study_name=experiment.name, storage=f"sqlite:///{experiment.optuna_file}")
        assert [trial.state.name for trial in study.trials] == ["COMPLETE"] * 5
        assert all(trial.value is not None for trial in study.trials)
    log = [json.loads(line) for line in events.read_text().splitlines()]
    by_beta = {beta: [e for e in log if e["beta"] == beta] for beta in betas}
    first_starts = [next(e["time"] for e in by_beta[beta] if e["event"] == "start") for beta in betas]
    later_reports = [e["time"] for e in log if e["event"] == "report" and e["step"] >= 2]
    assert max(first_starts) < min(later_reports)  # every configuration started before any trained further

    def reports(beta):
        return [e["step"] for e in by_beta[beta] if e["event"] == "report"]

    def starts(beta):
        return [e["from_step"] for e in by_beta[beta] if e["event"] == "start"]

    # Beta 0.1 and 0.3 (first scores 0.1 and 0.5, below the cutoff 0.6 over all five) end where they paused; 0.2
    # and 0.4 resume from the checkpoint of step 1; 0.5, the last to start, found nothing waiting and never paused.
    assert reports(0.1) == [1] and reports(0.3) == [1]
    assert starts(0.2) == [0, 1] and reports(0.2) == [1, 2, 3]
    assert starts(0.4) == [0, 1] and reports(0.4)[:2] == [1, 2]
    assert starts(0.5) == [0] and reports(0.5)[:2] == [1, 2]
    # One at a time, resumed trials included: each run of a trial, from its start to its last report before it
    # paused or ended, overlaps no other.
    runs, current = [], {}
    for event in sorted(log, key=lambda e: e["time"]):
        if event["event"] == "start":
            current[event["beta"]] = [event["time"], event["time"]]
            runs.append(current[event["beta"]])
        else:
            current[event["beta"]][1] = event["time"]
    runs.sort()
    assert all(earlier[1] < later[0] for earlier, later in zip(runs, runs[1:]))
    # The search's saved state says every trial ended, those ended where they paused too: tuner reads it to decide
    # whether the search completed (and scores the test split) or stopped early (and prints the resume command).
    state = json.loads(next((tmp_path / "tune" / "paused").glob("experiment_state-*.json")).read_text())
    saved = {json.loads(trial)["config"]["train.beta"]: json.loads(trial)["status"] for trial, _ in state["trial_data"]}
    assert saved == {beta: "TERMINATED" for beta in betas}


def test_a_resumed_trial_keeps_its_own_result_files_and_a_resumed_search_gets_the_stored_ones(tmp_path):
    import pyarrow.fs

    stored, own = tmp_path / "stored", tmp_path / "own"
    stored.mkdir()
    own.mkdir()
    trial = SimpleNamespace(checkpoint=object(), local_path=str(own),
                            storage=SimpleNamespace(trial_fs_path=str(stored),
                                                    storage_filesystem=pyarrow.fs.LocalFileSystem()))
    for callback in build.result_file_callbacks():
        name = "result.json" if "Json" in type(callback).__name__ else "progress.csv"
        (stored / name).write_text("stored, a few seconds old\n")
        (own / name).write_text("stored, a few seconds old\nthe report since\n")
        callback._restore_from_remote(name, trial)  # what Tune's writers do as a trial (re)starts
        assert (own / name).read_text().endswith("the report since\n")
        (own / name).unlink()
        callback._restore_from_remote(name, trial)
        assert (own / name).read_text() == "stored, a few seconds old\n"


def test_a_report_that_breaks_a_guard_stops_its_trial_and_counts_as_worst_on_the_rung():
    from ray.tune.schedulers import TrialScheduler

    asha, (broken, holding) = scheduler_with(["broken", "holding"])
    controller = FakeController([broken, holding], finished=True)
    # a high score, but below the base model on a guard group: stopped at once, whatever the rung would say
    assert asha.on_trial_result(controller, broken, {**result(1, 0.99), "eval_guard_broken": 1.0}) == \
        TrialScheduler.STOP
    assert asha.on_trial_result(controller, holding, {**result(1, 0.5), "eval_guard_broken": 0.0}) == \
        TrialScheduler.CONTINUE
    assert asha._sanitized({PREF: 0.99, "eval_guard_broken": 1.0})[PREF] < 0 < asha._sanitized({PREF: 0.5})[PREF]


def test_optuna_learns_which_trials_broke_a_guard_as_a_constraint(tmp_path):
    spec = validate_spec({"search": {"guard_groups": ["fact"], "seed": 0,
                                     "space": {"train.learning_rate": {"type": "loguniform", "low": 1e-5,
                                                                       "high": 1e-3}}}})
    (tmp_path / "tuner").mkdir()
    experiment = SimpleNamespace(uri=str(tmp_path), name="guarded")
    limiter = build.build_searcher(spec, experiment)
    limiter.set_search_properties(PREF, "max", search_space.param_space(spec))
    searcher = limiter.searcher
    assert searcher._sampler._constraints_func is searchers.guard_constraint
    for trial_id, broken in (("a", 1.0), ("b", 0.0)):
        assert limiter.suggest(trial_id) is not None
        limiter.on_trial_complete(trial_id, {PREF: 0.9, "eval_guard_broken": broken})
    trials = searcher._ot_study.get_trials()
    assert [t.user_attrs.get(searchers.GUARD_ATTR) for t in trials] == [1.0, 0.0]
    assert [searchers.guard_constraint(t) for t in trials] == [[1.0], [0.0]]  # > 0: infeasible


def test_a_trial_the_study_already_finished_is_reported_again_after_a_resume_without_failing(tmp_path):
    spec = validate_spec({"search": {"guard_groups": ["fact"], "seed": 0,
                                     "space": {"train.learning_rate": {"type": "loguniform", "low": 1e-5,
                                                                       "high": 1e-3}}}})
    (tmp_path / "tuner").mkdir()
    limiter = build.build_searcher(spec, SimpleNamespace(uri=str(tmp_path), name="resumed"))
    limiter.set_search_properties(PREF, "max", search_space.param_space(spec))
    limiter.suggest("a")
    searcher = limiter.searcher
    ot_trial = searcher._ot_trials["a"]
    searcher._ot_study.tell(ot_trial, 0.5)  # the study saw the end before Tune's last snapshot
    searcher.on_trial_complete("a", {PREF: 0.9, "eval_guard_broken": 1.0})  # Tune reports it again
    assert searcher._ot_study.get_trials()[0].value == 0.5


@pytest.mark.parametrize(("requested", "recorded", "trials_get"), [
    ("auto", {"backend": "unsloth", "device": "cuda", "precision": "4bit"}, "unsloth"),
    ("auto", {"backend": "hf", "device": "cuda", "precision": "bfloat16"}, "hf"),
    ("auto", None, "auto"),  # prepared before the runtime was recorded: the trials resolve it, as they did
    ("hf", {"backend": "hf", "device": "cpu", "precision": "float32"}, "hf"),
])
def test_trials_train_on_the_backend_the_passes_were_run_with(requested, recorded, trials_get, tmp_path,
                                                              monkeypatch):
    """`auto` is resolved once, in the driver (tuner.trial.backends.pass_runtime): a worker whose environment
    differs from the driver's (unsloth installed there only) must not train against a reference from another
    model."""
    from ray import tune

    from tuner.data import loading

    given = {}
    monkeypatch.setattr(tune, "with_parameters", lambda function, **kwargs: given.update(kwargs) or function)
    monkeypatch.setattr(tune, "with_resources", lambda function, resources: function)
    monkeypatch.setattr(loading, "load_prepared", lambda *args, **kwargs: None)
    passes = tmp_path / "passes.json"
    if recorded is not None:
        passes.write_text(json.dumps({"runtime": recorded}))
    experiment = SimpleNamespace(passes_file=passes, data_dir=tmp_path, local_copy=lambda path: path,
                                 shares_reference=False, cache_dir=tmp_path, path=tmp_path,
                                 location=SimpleNamespace(is_local=True), base_scores=lambda: {})
    build.trainable(validate_spec({"model": {"backend": requested}}), experiment)
    assert given["spec_dict"]["model"]["backend"] == trials_get
