"""The search: a Ray Tune Tuner with OptunaSearch (study in SQLite inside the experiment folder, or `search.storage`),
ASHA on the search metric, fractional GPUs through tune.with_resources, checkpoints kept by score, results in the
experiment's storage (a folder or object storage, through its pyarrow filesystem), and Tune.restore to resume.

Trials get the prepared data through Ray's object store (tune.with_parameters), never through a path: wherever a
trial runs, it needs no shared folder and no storage credentials to read its data.
"""

from __future__ import annotations

import os
import posixpath

from tuner.experiment.folder import Experiment
from tuner.search.space import (baseline_config, max_eval_rounds, param_space, planned_trials, races_trials,
                                shown_keys, trial_count)
from tuner.spec import Spec

# The modules whose classes subclass Ray's and Optuna's (tuner.search.searchers, .scheduler, .callbacks) are imported
# by the functions below that need them, not at the top: only a search that starts imports them.


def build_searcher(spec: Spec, experiment: Experiment):
    """The search algorithm, limited to `search.max_concurrent_trials` running trials. A trial paused at the
    first rung (scheduler.pause_at_first_rung) does not count: its place goes to a configuration not yet tried."""
    from tuner.search import searchers

    planned = planned_trials(spec)
    points = planned if planned is not None else spec.search.points_to_evaluate or None
    limit = spec.search.max_concurrent_trials
    baseline = baseline_config(spec)
    if spec.search.uses_optuna():
        import optuna

        from tuner.search import study

        searcher = searchers.ResumableOptunaSearch(
            sampler=optuna.samplers.TPESampler(
                seed=spec.search.seed,
                constraints_func=searchers.guard_constraint if spec.search.guard_groups else None),
            storage=study.storage_for(spec.search.storage, experiment.uri),
            study_name=experiment.name,
            points_to_evaluate=points,
        )
        if baseline is not None:
            searcher = searchers.BaselineFirst(searcher, baseline)
        return searchers.RunningTrialsLimiter(searcher, max_concurrent=limit)
    # Tune ignores TuneConfig.max_concurrent_trials for a BasicVariantGenerator: it takes the limit itself. A search
    # that samples nothing gives it every trial as a point, over an empty param_space: one trial each. The baseline
    # is the first point (each point is one of Tune's samples: trial_count counts it).
    if baseline is not None:
        points = [baseline, *(points or [])]
    return searchers.PauseAwareVariantGenerator(points_to_evaluate=points, random_state=spec.search.seed,
                                                max_concurrent=limit)


def build_scheduler(spec: Spec, train_rows: int):
    if spec.scheduler.type == "none":
        return None
    from tuner.search.scheduler import NanSafeASHA

    max_t = spec.scheduler.max_t or max_eval_rounds(spec, train_rows)
    races = races_trials(spec)
    return NanSafeASHA(
        time_attr="training_iteration",
        max_t=max_t,
        # Repeats of one setting are not raced: their one rung is max_t, where every trial ends anyway, and only a
        # broken guard group stops one before.
        grace_period=min(spec.scheduler.grace_period, max_t) if races else max_t,
        reduction_factor=spec.scheduler.reduction_factor,
        pause_at_first_rung=spec.scheduler.pause_at_first_rung and races,
        max_running=spec.search.max_concurrent_trials,
    )


def study_upload(spec: Spec, experiment: Experiment) -> list:
    """With object storage and the default SQLite study (on the driver's disk), a Tune callback that uploads the
    study beside the results at every trial's end and whenever Tune saves its experiment state (which holds the
    searcher's): `--resume`, on any machine, finds a study at least as new as Tune's snapshot of the searcher."""
    if experiment.location.is_local or not spec.search.uses_optuna() or spec.search.storage is not None:
        return []
    from tuner.search.callbacks import StudyUpload

    return [StudyUpload(experiment.uri)]


def logger_callbacks(spec: Spec, experiment: Experiment) -> list:
    if spec.run.wandb == "off":
        return []
    wandb_dir = experiment.path / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    # The driver's WANDB_MODE lets Ray skip its API-key check offline; `mode` reaches wandb.init in Ray's logging
    # actor, a process started before this environment variable was set.
    os.environ["WANDB_MODE"] = spec.run.wandb
    from tuner.search.callbacks import KeyFromEnvironmentWandbLoggerCallback

    return [KeyFromEnvironmentWandbLoggerCallback(project=spec.run.wandb_project, group=experiment.name,
                                                  dir=str(wandb_dir), mode=spec.run.wandb)]


def trainable(spec: Spec, experiment: Experiment, verbose: bool = False):
    """run_trial with the spec and the prepared data, which tune.with_parameters puts into Ray's object store once.
    The data is loaded into memory first: a memory-mapped dataset pickles as the path of its files, which other
    nodes do not have."""
    from ray import tune

    from tuner.data import loading as data
    from tuner.passes import tasks as model_passes
    from tuner.trial.trainable import run_trial

    prepared = data.load_prepared(experiment.local_copy(experiment.data_dir), in_memory=True)
    reference = (data.load_prepared(experiment.local_copy(experiment.reference_dir), in_memory=True)
                 if experiment.shares_reference else None)
    spec_dict = spec.model_dump(mode="json")
    if spec.model.backend == "auto" and (decided := model_passes.recorded_runtime(experiment)) is not None:
        # `auto` resolved once, in the driver, for the passes and the trials alike: a worker whose environment
        # differs from the driver's must not train on another backend than the shared reference was computed with.
        spec_dict["model"]["backend"] = decided.backend
    with_spec = tune.with_parameters(
        run_trial, spec_dict=spec_dict, data=prepared, reference=reference,
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
    from tuner.search.callbacks import CsvProgress, JsonResults

    return [JsonResults(), CsvProgress()]


def progress_callbacks(spec: Spec, verbose: bool) -> list:
    """Quiet runs print tuner's own compact trial table; verbose ones keep Tune's."""
    if verbose:
        return []
    from tuner.search.callbacks import TrialTable

    return [TrialTable(spec.metric, shown_keys(spec))]


def build_tuner(spec: Spec, experiment: Experiment, train_rows: int, verbose: bool = False):
    from ray import tune

    from tuner.passes import shadow  # the test split scored in the shadow of the trials

    return tune.Tuner(
        trainable(spec, experiment, verbose),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.search.mode,
            search_alg=build_searcher(spec, experiment),
            scheduler=build_scheduler(spec, train_rows),
            # the running-trial limit is build_searcher's; a search that samples nothing lists each trial
            num_samples=trial_count(spec),
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
            + progress_callbacks(spec, verbose) + shadow.callbacks(spec, experiment),
            verbose=1 if verbose else 0,
        ),
    )


def restore_tuner(spec: Spec, experiment: Experiment, verbose: bool = False):
    """Tune.restore: finished trials kept, unfinished ones resumed from their last checkpoint, errored ones left
    as they were; the searcher (and so the Optuna study) continues where it stopped, up to num_samples in all."""
    from ray import tune

    from tuner.search import study

    # The pickled searcher holds the study's storage: reconnect it to this folder's study, wherever it was created.
    study.ExperimentSQLite.relocated = experiment.uri
    return tune.Tuner.restore(experiment.location.fs_path, trainable=trainable(spec, experiment, verbose),
                              resume_unfinished=True, resume_errored=False, restart_errored=False,
                              storage_filesystem=experiment.location.filesystem)

