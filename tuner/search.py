"""The search: a Ray Tune Tuner with OptunaSearch (study in SQLite inside the experiment folder), ASHA on the search
metric, fractional GPUs through tune.with_resources, and checkpoints kept by score.

Experiment folder layout (`run.storage_path/NAME/`): Tune's own files and one folder per trial, plus `tuner/` with
the resolved spec, the prepared data and `optuna.db`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.spec import Distribution, Spec, to_yaml

TUNER_DIR = "tuner"
SPEC_FILE = "spec.yaml"
OPTUNA_FILE = "optuna.db"


@dataclass
class Experiment:
    path: Path  # storage_path / name
    name: str

    @property
    def tuner_dir(self) -> Path:
        return self.path / TUNER_DIR

    @property
    def data_dir(self) -> Path:
        return self.tuner_dir / "data"

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{(self.tuner_dir / OPTUNA_FILE).resolve()}"


def default_name(spec: Spec) -> str:
    methods = "-".join(spec.searched_methods())
    return f"{methods}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_experiment(spec: Spec, name: str) -> Experiment:
    path = Path(spec.run.storage_path).expanduser().resolve() / name
    if path.exists():
        raise FileExistsError(f"run.name: {path} already exists; choose another --name, got {name!r}")
    experiment = Experiment(path, name)
    experiment.tuner_dir.mkdir(parents=True, mode=0o700)
    (experiment.tuner_dir / SPEC_FILE).write_text(to_yaml(spec))
    return experiment


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


def build_searcher(spec: Spec, experiment: Experiment):
    points = spec.search.points_to_evaluate or None
    if spec.search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(
            sampler=optuna.samplers.TPESampler(seed=spec.search.seed),
            storage=optuna.storages.RDBStorage(experiment.optuna_url),
            study_name=experiment.name,
            points_to_evaluate=points,
        )
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=points, random_state=spec.search.seed)


def planned_eval_rounds(spec: Spec, train_rows: int) -> int:
    """How many times a trial that is never stopped evaluates: ASHA's max_t unless the spec sets one."""
    train = spec.train
    eval_steps = train.get("eval_steps", 4)
    if train.get("max_steps", -1) > 0:
        steps = train["max_steps"]
    else:
        batch = train.get("per_device_train_batch_size", 8) * train.get("gradient_accumulation_steps", 1)
        steps = math.ceil(train_rows / batch) * train.get("num_train_epochs", 3)
    if isinstance(eval_steps, float) and eval_steps < 1:  # TRL reads a float below 1 as a share of all steps
        eval_steps = max(1, math.ceil(steps * eval_steps))
    return max(1, math.ceil(steps / eval_steps))


def build_scheduler(spec: Spec, train_rows: int):
    if spec.scheduler.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_t = spec.scheduler.max_t or planned_eval_rounds(spec, train_rows)
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

    os.environ["WANDB_MODE"] = spec.run.wandb
    wandb_dir = experiment.path / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    return [WandbLoggerCallback(project=spec.run.wandb_project, group=experiment.name, dir=str(wandb_dir))]


# ---------------------------------------------------------------------------------------------- running


def build_tuner(spec: Spec, experiment: Experiment, train_rows: int):
    from ray import tune

    from tuner.trainable import run_trial

    trainable = tune.with_parameters(run_trial, spec_dict=spec.model_dump(mode="json"),
                                     data_dir=str(experiment.data_dir))
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.search.mode,
            search_alg=build_searcher(spec, experiment),
            scheduler=build_scheduler(spec, train_rows),
            num_samples=spec.search.num_samples,
            max_concurrent_trials=spec.search.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=str(experiment.path.parent),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=spec.run.keep_checkpoints,
                checkpoint_score_attribute=spec.metric,
                checkpoint_score_order=spec.search.mode,
            ),
            callbacks=logger_callbacks(spec, experiment),
            verbose=1,
        ),
    )


def start_ray(address: str | None, num_cpus: int | None = None):
    """Attach to a cluster when an address is given; otherwise a local Ray whose dashboard binds 127.0.0.1 only."""
    import ray

    if address:
        return ray.init(address=address, log_to_driver=True)
    return ray.init(include_dashboard=True, dashboard_host="127.0.0.1", num_cpus=num_cpus, log_to_driver=True)
