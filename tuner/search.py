"""The search: a Ray Tune Tuner with OptunaSearch (study in SQLite inside the experiment folder, or `search.storage`),
ASHA on the search metric, fractional GPUs through tune.with_resources, checkpoints kept by score, results in the
experiment's storage (a folder or object storage, through its pyarrow filesystem), and Tune.restore to resume.

Trials get the prepared data through Ray's object store (tune.with_parameters), never through a path: wherever a
trial runs, it needs no shared folder and no storage credentials to read its data.
"""

from __future__ import annotations

import itertools
import math
import os
import posixpath
from typing import Any

from tuner.experiment import Experiment
from tuner.spec import Distribution, Spec, with_sampled
from tuner.spec.schema import EVAL_ROUND_FIELDS

# What ASHA sees in place of a NaN or infinite metric, or of a report that breaks a guard group: the worst value,
# finite so that its percentiles stay numbers.
WORST_FOR_ASHA = 1e300
GUARD_ATTR = "guard_broken"  # the Optuna trial's user attribute: guard groups its last report broke


def breaks_guard(result: dict | None) -> bool:
    """Whether a report is clearly worse than the base model on a guard group (search.guard_groups)."""
    from tuner.quality import GUARD_BROKEN

    value = (result or {}).get(GUARD_BROKEN)
    return isinstance(value, (int, float)) and value > 0


def guard_constraint(trial) -> list[float]:
    """Optuna's constraints_func: feasible (<= 0) when the trial's last report held every guard group, so that TPE
    learns where the guard breaks instead of treating those trials as good or as missing."""
    return [float(trial.user_attrs.get(GUARD_ATTR, 0.0))]

# ---------------------------------------------------------------------------------------------- search space


def to_tune(distribution: Distribution):
    from ray import tune

    d = distribution
    if d.type == "loguniform":
        return tune.loguniform(d.low, d.high)
    if d.type == "uniform":
        return tune.loguniform(d.low, d.high) if d.log else tune.uniform(d.low, d.high)
    if d.type == "int":  # Tune's upper bound is exclusive; the spec's is inclusive
        return (tune.lograndint if d.log else tune.randint)(int(d.low), int(d.high) + 1)
    if d.type == "choice":
        return tune.choice(d.values)
    return tune.grid_search(d.values)


def param_space(spec: Spec) -> dict[str, Any]:
    return {key: to_tune(distribution) for key, distribution in spec.search.space.items()}


def _resumable_optuna_search():
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class ResumableOptunaSearch(OptunaSearch):
        """OptunaSearch over a study in SQLite that may be ahead of Tune's last snapshot.

        After a driver is killed, the study can already hold the end of a trial that Tune's (periodic) snapshot
        still calls running; Tune then resumes that trial from its last checkpoint and reports it again. The
        study keeps the value it has instead of failing the search.
        """

        def on_trial_result(self, trial_id, result):
            try:
                super().on_trial_result(trial_id, result)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass

        def on_trial_complete(self, trial_id, result=None, error=False):
            from tuner.quality import GUARD_BROKEN

            try:
                if trial_id in self._ot_trials and result and GUARD_BROKEN in result:
                    self._ot_trials[trial_id].set_user_attr(GUARD_ATTR, float(result[GUARD_BROKEN]))
                super().on_trial_complete(trial_id, result, error)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._ot_trials.pop(trial_id, None)

    return ResumableOptunaSearch


def build_searcher(spec: Spec, experiment: Experiment):
    """The search algorithm, limited to `search.max_concurrent_trials` running trials. A trial paused at the
    first rung (scheduler.pause_at_first_rung) does not count: its place goes to a configuration not yet tried."""
    points = spec.search.points_to_evaluate or None
    limit = spec.search.max_concurrent_trials
    if spec.search.algorithm == "optuna":
        import optuna

        from tuner import study

        searcher = _resumable_optuna_search()(
            sampler=optuna.samplers.TPESampler(seed=spec.search.seed,
                                               constraints_func=guard_constraint if spec.search.guard_groups else None),
            storage=study.storage_for(spec.search.storage, experiment.uri),
            study_name=experiment.name,
            points_to_evaluate=points,
        )
        return _running_trials_limiter()(searcher, max_concurrent=limit)
    # Tune ignores TuneConfig.max_concurrent_trials for a BasicVariantGenerator: it takes the limit itself.
    return _pause_aware_variant_generator()(points_to_evaluate=points, random_state=spec.search.seed,
                                            max_concurrent=limit)


class _PausedTrialsCountedOut:
    """A running-trial limit that counts a paused trial out until it resumes. The scheduler tells it (on_pause,
    on_unpause), as Ray's HyperBandForBOHB tells its searcher through `search_alg.searcher`; only TuneBOHB, which
    tuner does not use, has these hooks itself."""

    paused_trials: set[str]

    def _live(self) -> set[str]:  # the trials the limit counts
        raise NotImplementedError

    def on_pause(self, trial_id: str):
        if trial_id in self._live():
            self._live().remove(trial_id)
            self.paused_trials.add(trial_id)

    def on_unpause(self, trial_id: str):
        if trial_id in self.paused_trials:
            self.paused_trials.remove(trial_id)
            self._live().add(trial_id)

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.on_unpause(trial_id)  # a paused trial can end (stopped, errored) without running again
        super().on_trial_complete(trial_id, result=result, error=error)


def _running_trials_limiter():
    from ray.tune.search import ConcurrencyLimiter

    class RunningTrialsLimiter(_PausedTrialsCountedOut, ConcurrencyLimiter):
        """Tune's ConcurrencyLimiter, whose `max_concurrent` counts a paused trial out until it resumes."""

        def __init__(self, searcher, max_concurrent: int):
            super().__init__(searcher, max_concurrent=max_concurrent)
            self.paused_trials = set()

        def _live(self) -> set[str]:
            return self.live_trials

    return RunningTrialsLimiter


def _pause_aware_variant_generator():
    from ray.tune.search import BasicVariantGenerator

    class PauseAwareVariantGenerator(_PausedTrialsCountedOut, BasicVariantGenerator):
        """Tune's random and grid generator, whose `max_concurrent` counts a paused trial out until it resumes."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.paused_trials = set()
            self.created = 0

        def _live(self) -> set[str]:
            return self._live_trials

        def next_trial(self):
            trial = super().next_trial()
            self.created += trial is not None
            return trial

        def is_finished(self) -> bool:
            # Ray's generator finishes when its iterator runs dry, one call after the last trial was created: under
            # the running limit, only after that trial's first turn. Every trial created is finished here, so the
            # last configuration to start never pauses for nothing.
            return super().is_finished() or 0 < self.total_samples <= self.created

        @property
        def searcher(self):  # where the scheduler finds the pause hooks, as on a SearchGenerator
            return self

    return PauseAwareVariantGenerator


def max_eval_rounds(spec: Spec, train_rows: int) -> int:
    """Eval rounds of the longest trial the search can sample. With step counts searched (train.max_steps, batch
    size, eval_steps, ...), the most over every combination of their values (choices, or the bounds of a range: the
    rounds grow or shrink monotonically with each), so that ASHA's max_t never stops a long trial early; shorter
    trials simply finish before it."""
    searched = {key: d for key, d in spec.search.space.items()
                if key.startswith("train.") and key.removeprefix("train.") in EVAL_ROUND_FIELDS}
    if not searched:
        return spec.eval_rounds(train_rows)
    values = [d.values if d.values is not None else [int(d.low), int(d.high)] if d.type == "int" else [d.low, d.high]
              for d in searched.values()]
    return max(with_sampled(spec, dict(zip(searched, combination))).eval_rounds(train_rows)
               for combination in itertools.product(*values))


def _nan_safe_asha():
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler
    from ray.tune.utils import flatten_dict

    class NanSafeASHA(ASHAScheduler):
        """ASHA that ranks a NaN or infinite metric as the worst value, and, with `pause_at_first_rung`, pauses a
        trial that reaches the first rung (grace_period eval rounds) while configurations are still waiting to
        start: no trial trains past the first rung while one waits (the time to signal). Once all have started, a
        paused trial ends if it is below the rung's cutoff among the scores there are, else resumes from the
        checkpoint it reported there (optimizer state included).
        A report clearly worse than the base model on a guard group (search.guard_groups) stops its trial at once,
        and counts as the worst value on ASHA's rung.

        Ray's ASHA compares `value < cutoff`, which is False for NaN, so a diverged trial would never be stopped.
        Only the scheduler sees the substitute; the reported result (and so the ranking, which never ranks NaN)
        keeps the NaN."""

        def __init__(self, *, grace_period: int, pause_at_first_rung: bool = False,
                     max_running: int | None = None, **kwargs):
            super().__init__(grace_period=grace_period, **kwargs)
            self.first_rung = grace_period
            self.pause_at_first_rung = pause_at_first_rung
            self.max_running = max_running  # search.max_concurrent_trials, which a resumed trial counts in
            self.ending: set[str] = set()  # trials that made their last report, or that ASHA stopped

        def _sanitized(self, result: dict) -> dict:
            value = result.get(self._metric)
            if (isinstance(value, (int, float)) and not math.isfinite(value)) or breaks_guard(result):
                # a trial clearly worse than the base model on a guard group is stopped at the next rung
                return {**result, self._metric: -WORST_FOR_ASHA * self._metric_op}
            return result

        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, self._sanitized(result))
            if breaks_guard(result):  # training on moves further from the base model, not back to it
                decision = TrialScheduler.STOP
            if decision == TrialScheduler.CONTINUE and self._pauses_at(tune_controller, result):
                tune_controller.search_alg.searcher.on_pause(trial.trial_id)
                return TrialScheduler.PAUSE
            if decision == TrialScheduler.STOP or result.get("step", 0) >= result.get("max_steps", math.inf):
                self.ending.add(trial.trial_id)
            return decision

        def on_trial_complete(self, tune_controller, trial, result):
            return super().on_trial_complete(tune_controller, trial, self._sanitized(result))

        def on_trial_add(self, tune_controller, trial):
            super().on_trial_add(tune_controller, trial)
            if trial.trial_id in tune_controller.search_alg.searcher.paused_trials:
                # Paused when the driver stopped, and requeued by --resume as pending (Tune would start it at once,
                # past the running-trial limit and unjudged): it stays paused, its first-rung score back on the rung
                # (ASHA's rungs are not saved), to be judged or resumed in its turn. Tune files the trial under its
                # status after this call.
                trial.set_status(Trial.PAUSED)
                self._record_first_rung(trial)

        def _record_first_rung(self, trial) -> None:
            result = self._sanitized(trial.last_result)
            rung = self._first_rung_of(trial)
            if rung is not None and result.get(self._time_attr) == self.first_rung and self._metric in result:
                rung[1][trial.trial_id] = self._metric_op * result[self._metric]

        def _first_rung_of(self, trial):
            """ASHA's first rung in the trial's bracket, as (bracket, {trial id: score}); None if it has none."""
            bracket = self._trial_info.get(trial.trial_id)
            for milestone, recorded in bracket._rungs if bracket is not None else []:
                if milestone == self.first_rung:
                    return bracket, recorded
            return None

        def choose_trial_to_run(self, tune_controller):
            trials = tune_controller.get_trials()
            for trial in trials:
                if trial.status == Trial.PENDING:
                    return trial
            if self.pause_at_first_rung and not tune_controller.search_alg.is_finished():
                return None  # a paused trial waits until every configuration has had its turn
            # A trial that is ending frees its place: the paused one is queued before that trial's process stops,
            # which Tune then keeps for it (a process started afresh costs seconds of imports).
            running = sum(trial.status == Trial.RUNNING and trial.trial_id not in self.ending for trial in trials)
            if self.max_running is not None and running >= self.max_running:
                return None  # the searcher's limit holds new trials only
            for trial in trials:
                if trial.status != Trial.PAUSED:
                    continue
                if self.below_first_rung_cutoff(trial):
                    # Ended where it paused, as ASHA ends a running trial: the searcher gets its score first (Tune
                    # would tell it of a paused trial's end without one, which Optuna records as pruned, no value).
                    tune_controller.search_alg.on_trial_complete(trial.trial_id,
                                                                 result=flatten_dict(trial.last_result))
                    tune_controller.stop_trial(trial)
                    continue
                tune_controller.search_alg.searcher.on_unpause(trial.trial_id)
                return trial
            return None

        def below_first_rung_cutoff(self, trial) -> bool:
            """Whether the trial's first-rung score is below the rung's cutoff now. ASHA let the first trials pass
            the rung against the few scores there were when they reached it; a paused trial is judged again against
            every score the rung holds when it would resume, as synchronous successive halving judges."""
            rung = self._first_rung_of(trial)
            if rung is None or trial.trial_id not in rung[1]:
                return False
            bracket, recorded = rung
            cutoff = bracket.cutoff(recorded)
            return cutoff is not None and recorded[trial.trial_id] < cutoff

        def _pauses_at(self, tune_controller, result: dict) -> bool:
            # Exactly at the first rung, so a trial resumed (or restored by --resume) past it never pauses again;
            # never at a trial's last report, which ends it anyway.
            return (self.pause_at_first_rung and result.get(self._time_attr) == self.first_rung
                    and not result.get("done") and result.get("step", 0) < result.get("max_steps", math.inf)
                    and self._configurations_waiting(tune_controller))

        def _configurations_waiting(self, tune_controller) -> bool:
            # A pending trial that has reported is a paused one on its way back, not a configuration still waiting
            # (Tune's last_result always holds the trial id).
            return (not tune_controller.search_alg.is_finished()
                    or any(trial.status == Trial.PENDING and self._time_attr not in trial.last_result
                           for trial in tune_controller.get_trials()))

    return NanSafeASHA


def build_scheduler(spec: Spec, train_rows: int):
    if spec.scheduler.type == "none":
        return None
    max_t = spec.scheduler.max_t or max_eval_rounds(spec, train_rows)
    return _nan_safe_asha()(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=min(spec.scheduler.grace_period, max_t),
        reduction_factor=spec.scheduler.reduction_factor,
        pause_at_first_rung=spec.scheduler.pause_at_first_rung,
        max_running=spec.search.max_concurrent_trials,
    )


def study_upload(spec: Spec, experiment: Experiment) -> list:
    """With object storage and the default SQLite study (on the driver's disk), a Tune callback that uploads the
    study beside the results at every trial's end and whenever Tune saves its experiment state (which holds the
    searcher's): `--resume`, on any machine, finds a study at least as new as Tune's snapshot of the searcher."""
    if experiment.location.is_local or spec.search.algorithm != "optuna" or spec.search.storage is not None:
        return []
    from ray import tune

    class StudyUpload(tune.Callback):
        def __init__(self, location: str):
            self.location = location
            self.experiment = Experiment(location)

        def __reduce__(self):  # Tune pickles its callbacks (tuner.pkl): rebuilt where the search resumes
            return StudyUpload, (self.location,)

        def upload(self) -> None:
            # The driver is the study's only writer and calls back between its writes: the file is consistent.
            if self.experiment.optuna_file.is_file():
                self.experiment.publish(self.experiment.optuna_file)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.upload()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.upload()

        def get_state(self):  # called as Tune saves its experiment state, right after the searcher's
            self.upload()
            return None

        def on_experiment_end(self, trials, **info):
            self.upload()

    return [StudyUpload(experiment.uri)]


def logger_callbacks(spec: Spec, experiment: Experiment) -> list:
    if spec.run.wandb == "off":
        return []
    wandb_dir = experiment.path / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    # The driver's WANDB_MODE lets Ray skip its API-key check offline; `mode` reaches wandb.init in Ray's logging
    # actor, a process started before this environment variable was set.
    os.environ["WANDB_MODE"] = spec.run.wandb
    return [_wandb_callback_class()(project=spec.run.wandb_project, group=experiment.name, dir=str(wandb_dir),
                                    mode=spec.run.wandb)]


def _wandb_callback_class():
    import ray
    from ray.air.integrations.wandb import WandbLoggerCallback
    from ray.air.util.node import _force_on_current_node

    class KeyFromEnvironmentWandbLoggerCallback(WandbLoggerCallback):
        """Ray's WandbLoggerCallback, except that WANDB_API_KEY is not copied into the logging actor's runtime
        env, where Ray's state API and dashboard show it to every holder of the cluster's token. The actor runs on
        the driver's node (as in Ray's) and reads the key where wandb looks for it: the environment that node's Ray
        was started with (a local Ray: the driver's own) or `wandb login`'s ~/.netrc."""

        def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
            if not self._remote_logger_class:  # Ray's own options, less runtime_env={"env_vars": {key}}
                self._remote_logger_class = ray.remote(num_cpus=0, **_force_on_current_node(), max_restarts=-1,
                                                       max_task_retries=-1)(self._logger_actor_cls)
            super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)

    return KeyFromEnvironmentWandbLoggerCallback


# ---------------------------------------------------------------------------------------------- running


def trainable(spec: Spec, experiment: Experiment, verbose: bool = False):
    """run_trial with the spec and the prepared data, which tune.with_parameters puts into Ray's object store once.
    The data is loaded into memory first: a memory-mapped dataset pickles as the path of its files, which other
    nodes do not have."""
    from ray import tune

    from tuner import data
    from tuner.trainable import run_trial

    prepared = data.load_prepared(experiment.local_copy(experiment.data_dir), in_memory=True)
    reference = (data.load_prepared(experiment.local_copy(experiment.reference_dir), in_memory=True)
                 if experiment.shares_reference else None)
    with_spec = tune.with_parameters(
        run_trial, spec_dict=spec.model_dump(mode="json"), data=prepared, reference=reference,
        # A folder every trial of this experiment reaches: the experiment's own, unless it is in object storage
        # (each node then keeps its own, under its temporary folder).
        cache_dir=str(experiment.cache_dir) if experiment.location.is_local else None,
        # Each trial's output goes to trial.log in its folder: the experiment's, when on this file system.
        log_root=str(experiment.path) if experiment.location.is_local else None, verbose=verbose,
        # The base model's per-pair scores: the drift reference of trials without a reference of their own (ORPO).
        base_scores=experiment.base_scores())
    return tune.with_resources(with_spec, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def result_file_callbacks() -> list:
    """Tune's writers of each trial's result.json and progress.csv, except that a trial resumed by the driver that
    paused it keeps the files it has. At every start of a trial that has a checkpoint, Ray copies the stored files
    over the driver's own, to continue them after a restore; but it stores them only every few seconds, so a trial
    paused and resumed in between lost the reports made since (seen: a first-rung report gone from result.json,
    and so from the ranking). A driver that resumes an experiment has no files of its own and gets the stored ones."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    class KeepOwnFiles:
        def _restore_from_remote(self, file_name: str, trial) -> None:
            if not os.path.exists(os.path.join(trial.local_path, file_name)):
                super()._restore_from_remote(file_name, trial)

    class JsonResults(KeepOwnFiles, JsonLoggerCallback):
        pass

    class CsvProgress(KeepOwnFiles, CSVLoggerCallback):
        pass

    return [JsonResults(), CsvProgress()]


def progress_callbacks(spec: Spec, verbose: bool) -> list:
    """Quiet runs print tuner's own compact trial table; verbose ones keep Tune's."""
    from tuner import console

    return [] if verbose else [console.trial_table_callback(spec.metric, list(spec.search.space))]


def build_tuner(spec: Spec, experiment: Experiment, train_rows: int, verbose: bool = False):
    from ray import tune

    from tuner import shadow_scoring  # issue 28: the test scoring in the shadow of the trials

    return tune.Tuner(
        trainable(spec, experiment, verbose),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.search.mode,
            search_alg=build_searcher(spec, experiment),
            scheduler=build_scheduler(spec, train_rows),
            num_samples=spec.search.num_samples,  # the running-trial limit is build_searcher's
            # A finished trial's process runs the next trial: its imports (and on a GPU, compiled kernels) stay.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=posixpath.dirname(experiment.location.fs_path),
            storage_filesystem=experiment.location.filesystem,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=spec.run.keep_checkpoints,
                checkpoint_score_attribute=spec.metric,
                checkpoint_score_order=spec.search.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=spec.run.max_failures),
            callbacks=result_file_callbacks() + study_upload(spec, experiment) + logger_callbacks(spec, experiment)
            + progress_callbacks(spec, verbose) + shadow_scoring.callbacks(spec, experiment),
            verbose=1 if verbose else 0,
        ),
    )


def restore_tuner(spec: Spec, experiment: Experiment, verbose: bool = False):
    """Tune.restore: finished trials kept, unfinished ones resumed from their last checkpoint, errored ones left
    as they were; the searcher (and so the Optuna study) continues where it stopped, up to num_samples in all."""
    from ray import tune

    from tuner import study

    # The pickled searcher holds the study's storage: reconnect it to this folder's study, wherever it was created.
    study.ExperimentSQLite.relocated = experiment.uri
    return tune.Tuner.restore(experiment.location.fs_path, trainable=trainable(spec, experiment, verbose),
                              resume_unfinished=True, resume_errored=False, restart_errored=False,
                              storage_filesystem=experiment.location.filesystem)

