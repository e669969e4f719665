"""An experiment folder, `run.storage_path/NAME/`: checked before anything is written, created readable by the user
only, and prepared once for every trial (the split data, the shared DPO reference, the base model's metrics).

Besides Tune's own files and one folder per trial, it holds `tuner/`: spec.yaml (secrets redacted), data/,
optuna.db and base_metrics.json.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from tuner.spec import Spec, to_yaml

TUNER_DIR = "tuner"
SPEC_FILE = "spec.yaml"
OPTUNA_FILE = "optuna.db"
BASE_METRICS_FILE = "base_metrics.json"
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://")


class InputError(ValueError):
    """Something the user gave is wrong; the message says what and how to fix it."""


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

    @property
    def spec_file(self) -> Path:
        return self.tuner_dir / SPEC_FILE


def default_name(spec: Spec) -> str:
    return f"{'-'.join(spec.searched_methods())}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_storage(storage_path: str, name: str) -> Path:
    """The experiment path, after checking that it can be created; raises InputError."""
    if storage_path.startswith(REMOTE_SCHEMES):
        raise InputError(f"run.storage_path: tuner keeps its prepared data and Optuna study on a file system that "
                         f"every node mounts; use a shared path (NFS, a mounted bucket), got {storage_path!r}")
    if not name or "/" in name or name in (".", ".."):
        raise InputError(f"run.name: must be a plain folder name, got {name!r}")
    path = Path(storage_path).expanduser().resolve() / name
    if path.exists():
        raise InputError(f"run.name: {path} already exists; choose another --name, or continue it with "
                         f"--resume {path}")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"run.storage_path: {existing} is a file, not a folder, got {storage_path!r}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"run.storage_path: cannot create folders under {existing} (no write permission), "
                         f"got {storage_path!r}")
    return path


def check_wandb(mode: str) -> None:
    import importlib.util

    if mode != "off" and importlib.util.find_spec("wandb") is None:
        raise InputError(f"run.wandb: {mode!r} needs the wandb package: pip install -e '.[wandb]' "
                         f"(or set run.wandb: off), got {mode!r}")


def check_address(address: str | None) -> None:
    """Fail fast on a Ray address where nothing listens, instead of Ray's minute of retries."""
    if not address or address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address: expected HOST:PORT of a Ray head node (ray start --head prints it), "
                         f"got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as error:
        raise InputError(f"--address: no Ray head node answers at {address} ({error.strerror or error}); "
                         f"start one with `ray start --head`, or leave --address out for a local Ray") from None


def create(spec: Spec, path: Path) -> Experiment:
    experiment = Experiment(path, path.name)
    path.mkdir(parents=True, mode=0o700)
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; results may hold adapters of private data
    experiment.tuner_dir.mkdir(mode=0o700)
    experiment.spec_file.write_text(to_yaml(spec, redact=True))
    return experiment


TRAIN_LENGTH_FIELDS = ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps")


def rows_consumed(spec: Spec) -> int | None:
    """How many train pairs a trial can see (max_steps x batch x accumulation), when no search changes it."""
    train = spec.train
    if train.get("max_steps", -1) <= 0 or any(f"train.{f}" in spec.search.space for f in TRAIN_LENGTH_FIELDS):
        return None
    return train["max_steps"] * train.get("per_device_train_batch_size", 8) * train.get("gradient_accumulation_steps", 1)


def prepare(spec: Spec, experiment: Experiment, train, held_out) -> list[str]:
    """Everything every trial needs and no trial should redo; returns lines for the user."""
    from tuner import backends, models, quality, reference

    available = len(train)
    consumed = rows_consumed(spec)
    if consumed is not None and consumed < available:
        # Pairs past this count are never seen by any trial: tokenizing them and running the reference over them
        # would be wasted. The pairs kept are the first of the seeded shuffle, so still a random sample.
        train = train.select(range(consumed))
    train.save_to_disk(str(experiment.data_dir / "train"))
    held_out.save_to_disk(str(experiment.data_dir / "eval"))
    used = f" ({len(train)} used: train.max_steps x batch)" if len(train) < available else ""
    lines = [f"data: {available} train pairs{used}, {len(held_out)} eval pairs (no prompt in both)"]
    base = backends.load_base(models.resolve(spec.model.name))  # loaded once for both passes below
    # Scored first: TRL's DPOTrainer patches the model it is given (a fused LM head) for the reference pass.
    base_metrics = quality.base_model_metrics(base, held_out, spec.model.max_length, spec.eval_batch_size)
    reason = reference.why_not_shared(spec, backends.resolve_backend(spec.model.backend))
    if reason:
        lines.append(f"reference log-probs: computed in each trial ({reason})")
    else:
        started = time.perf_counter()
        sizes = reference.precompute(spec, base, train, held_out, experiment.data_dir / reference.SHARED_DIR)
        lines.append(f"reference log-probs: computed once for {sizes['train']} train and {sizes['eval']} eval "
                     f"pairs in {time.perf_counter() - started:.0f} s, shared by every DPO trial")
    (experiment.tuner_dir / BASE_METRICS_FILE).write_text(json.dumps(base_metrics))
    lines.append(f"base model: {', '.join(f'{k} = {v:.3f}' for k, v in base_metrics.items())}")
    return lines
