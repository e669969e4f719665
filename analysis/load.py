"""An experiment folder as two DataFrames, through Ray's ExperimentAnalysis: `trials` (one row per trial: status,
sampled config, error, best checkpoint) and `history` (one row per report, every metric)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

SPEC_PATH = Path("tuner") / "spec.yaml"
BASE_METRICS_PATH = Path("tuner") / "base_metrics.json"


@dataclass
class Experiment:
    path: Path
    spec: dict[str, Any]
    trials: pd.DataFrame
    history: pd.DataFrame
    analysis: Any  # ray.tune.ExperimentAnalysis
    base: dict[str, float] = field(default_factory=dict)  # the base model's eval metrics, when tuner.run stored them


class NotAnExperiment(ValueError):
    pass


def load_experiment(path: str | Path) -> Experiment:
    from ray.tune import ExperimentAnalysis

    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise NotAnExperiment(f"{path}: no such folder")
    try:
        analysis = ExperimentAnalysis(str(path))
    except ValueError:
        raise NotAnExperiment(f"{path}: not a Ray Tune experiment folder (no experiment_state-*.json); "
                              f"pass run.storage_path/NAME as written by tuner.run") from None
    spec_file = path / SPEC_PATH
    spec = yaml.safe_load(spec_file.read_text()) if spec_file.is_file() else {}
    rows, histories = [], []
    for trial in analysis.trials:
        frame = analysis.trial_dataframes.get(trial.trial_id, pd.DataFrame())
        rows.append(_trial_row(trial, frame, spec))
        if not frame.empty:
            histories.append(frame.assign(trial_id=trial.trial_id))
    trials = pd.DataFrame(rows)
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(columns=["trial_id"])
    base_file = path / BASE_METRICS_PATH
    base = json.loads(base_file.read_text()) if base_file.is_file() else {}
    return Experiment(path, spec, trials, history, analysis, base)


def _trial_row(trial, frame: pd.DataFrame, spec: dict[str, Any]) -> dict[str, Any]:
    last = frame.iloc[-1] if not frame.empty else {}
    finished_all_steps = not frame.empty and last.get("step", -1) >= last.get("max_steps", float("inf"))
    if trial.status == "ERROR":
        status = "errored"
    elif trial.status == "TERMINATED":
        status = "finished" if finished_all_steps else "stopped early"
    else:
        status = trial.status.lower()
    config = {f"config/{k}": v for k, v in trial.config.items()}
    return {
        "trial_id": trial.trial_id,
        "status": status,
        "method": trial.config.get("method", spec.get("method", "dpo")),
        "beta": _beta(trial.config, spec),
        "reports": len(frame),
        "error": _first_error_line(trial),
        "path": trial.path,
        **config,
    }


def _beta(config: dict[str, Any], spec: dict[str, Any]) -> float:
    # Same default as TRL's DPOConfig and ORPOConfig (0.1); the margin/beta column divides by it.
    return float(config.get("train.beta", (spec.get("train") or {}).get("beta", 0.1)))


def _first_error_line(trial) -> str:
    # Read from the trial's storage folder: Trial.error_file points into the local Ray session, which needs Ray.
    name = trial.run_metadata.error_filename
    error_file = Path(trial.path) / name if name else None
    if trial.status != "ERROR" or error_file is None or not error_file.is_file():
        return ""
    lines = [line.strip() for line in error_file.read_text().splitlines() if line.strip()]
    # Ray's error file is a traceback; its last line holds the exception and message.
    return lines[-1] if lines else ""


def best_checkpoint(experiment: Experiment, trial_id: str, metric: str, mode: str):
    trial = next(t for t in experiment.analysis.trials if t.trial_id == trial_id)
    return experiment.analysis.get_best_checkpoint(trial, metric=metric, mode=mode)
