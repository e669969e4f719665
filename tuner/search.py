"""The search: a Ray Tune Tuner with OptunaSearch (study in SQLite inside the experiment folder), ASHA on the search
metric, fractional GPUs through tune.with_resources, checkpoints kept by score, and Tune.restore to resume.
"""

from __future__ import annotations

import os
from typing import Any

from tuner.experiment import Experiment
from tuner.spec import Distribution, Spec

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
            try:
                super().on_trial_complete(trial_id, result, error)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._ot_trials.pop(trial_id, None)

    return ResumableOptunaSearch


def build_searcher(spec: Spec, experiment: Experiment):
    points = spec.search.points_to_evaluate or None
    if spec.search.algorithm == "optuna":
        import optuna

        return _resumable_optuna_search()(
            sampler=optuna.samplers.TPESampler(seed=spec.search.seed),
            storage=optuna.storages.RDBStorage(experiment.optuna_url),
            study_name=experiment.name,
            points_to_evaluate=points,
        )
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=points, random_state=spec.search.seed)


def build_scheduler(spec: Spec, train_rows: int):
    if spec.scheduler.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_t = spec.scheduler.max_t or spec.eval_rounds(train_rows)
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=min(spec.scheduler.grace_period, max_t),
        reduction_factor=spec.scheduler.reduction_factor,
    )


def logger_callbacks(spec: Spec, experiment: Experiment) -> list:
    if spec.run.wandb == "off":
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    wandb_dir = experiment.path / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    # The driver's WANDB_MODE lets Ray skip its API-key check offline; `mode` reaches wandb.init in Ray's logging
    # actor, a process started before this environment variable was set.
    os.environ["WANDB_MODE"] = spec.run.wandb
    return [WandbLoggerCallback(project=spec.run.wandb_project, group=experiment.name, dir=str(wandb_dir),
                                mode=spec.run.wandb)]


# ---------------------------------------------------------------------------------------------- running


def trainable(spec: Spec, experiment: Experiment):
    from ray import tune

    from tuner.trainable import run_trial

    with_spec = tune.with_parameters(
        run_trial, spec_dict=spec.model_dump(mode="json"), data_dir=str(experiment.data_dir),
        reference_dir=str(experiment.reference_dir) if experiment.shares_reference else None,
        cache_dir=str(experiment.cache_dir), base_scores=str(experiment.base_scores_file))
    return tune.with_resources(with_spec, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def build_tuner(spec: Spec, experiment: Experiment, train_rows: int):
    from ray import tune

    return tune.Tuner(
        trainable(spec, experiment),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.search.mode,
            search_alg=build_searcher(spec, experiment),
            scheduler=build_scheduler(spec, train_rows),
            num_samples=spec.search.num_samples,
            max_concurrent_trials=spec.search.max_concurrent_trials,
            # A finished trial's process runs the next trial: its imports (and on a GPU, compiled kernels) stay.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=str(experiment.path.parent),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=spec.run.keep_checkpoints,
                checkpoint_score_attribute=spec.metric,
                checkpoint_score_order=spec.search.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=spec.run.max_failures),
            callbacks=logger_callbacks(spec, experiment),
            verbose=1,
        ),
    )


def restore_tuner(spec: Spec, experiment: Experiment):
    """Tune.restore: finished trials kept, unfinished ones resumed from their last checkpoint, errored ones left
    as they were; the searcher (and so the Optuna study) continues where it stopped, up to num_samples in all."""
    from ray import tune

    return tune.Tuner.restore(str(experiment.path), trainable=trainable(spec, experiment), resume_unfinished=True,
                              resume_errored=False, restart_errored=False)


def start_ray(address: str | None, dashboard_host: str = "127.0.0.1"):
    """Attach to a cluster when an address is given; otherwise a local Ray with its dashboard on dashboard_host."""
    import ray

    if address:
        return ray.init(address=address, log_to_driver=True)
    return ray.init(include_dashboard=True, dashboard_host=dashboard_host, log_to_driver=True)
