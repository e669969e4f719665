"""Reading what Ray Tune wrote into an experiment folder, as two DataFrames: `trials` (one row per trial: status,
method, sampled config, error, folder) and `history` (one row per report: every metric, and the checkpoint that came
with it while it is kept). The one reader of Tune's files; `tuner.experiment.Experiment` calls it lazily.

It reads through the experiment's pyarrow filesystem, so a folder in object storage reads like a local one; folders
(`path`, `checkpoint_path`) are given as the experiment's location gives them: local paths, or URIs.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pandas as pd

from tuner.ranking import CHECKPOINT_COLUMN
from tuner.storage import Location


def read(location: Location, default_method: str, default_beta) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`default_beta(method)` gives beta where a trial's config does not set it (TRL's own default)."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(location.fs_path, storage_filesystem=location.filesystem)
    rows, histories = [], []
    for trial in analysis.trials:
        frame = analysis.trial_dataframes.get(trial.trial_id, pd.DataFrame())
        if not frame.empty:
            frame = frame.assign(trial_id=trial.trial_id)
            kept = _kept_checkpoints(location, trial.path)
            frame[CHECKPOINT_COLUMN] = [kept.get(name, float("nan")) if isinstance(name, str) else float("nan")
                                        for name in frame.get("checkpoint_dir_name",
                                                              pd.Series([None] * len(frame)))]
            histories.append(frame)
        rows.append(_trial_row(location, trial, frame, default_method, default_beta))
    trials = pd.DataFrame(rows)
    history = (pd.concat(histories, ignore_index=True) if histories
               else pd.DataFrame(columns=["trial_id", CHECKPOINT_COLUMN]))
    return trials, history


def _kept_checkpoints(location: Location, trial_path: str) -> dict[str, str]:
    """checkpoint folder name -> its path or URI, for the checkpoints still in the trial's folder (one listing).
    Tune deletes a checkpoint once keep_checkpoints better ones exist; its report stays in the history."""
    relative = location.relative(trial_path)
    if relative is None:
        return {}
    return {name: location.uri_of(posixpath.join(trial_path, name))
            for name, is_folder in location.listing(relative).items() if is_folder and name.startswith("checkpoint_")}


def _trial_row(location: Location, trial, frame: pd.DataFrame, default_method: str, default_beta) -> dict[str, Any]:
    last = frame.iloc[-1] if not frame.empty else {}
    finished_all_steps = not frame.empty and last.get("step", -1) >= last.get("max_steps", float("inf"))
    if trial.status == "ERROR":
        status = "errored"
    elif trial.status == "TERMINATED":
        status = "finished" if finished_all_steps else "stopped early"
    else:
        status = trial.status.lower()
    method = trial.config.get("method", default_method)
    config = {f"config/{k}": v for k, v in trial.config.items()}
    return {
        "trial_id": trial.trial_id,
        "status": status,
        "method": method,
        "beta": float(trial.config.get("train.beta", default_beta(method))),
        "reports": len(frame),
        "error": _first_error_line(location, trial),
        "path": location.uri_of(trial.path),
        **config,
    }


def _first_error_line(location: Location, trial) -> str:
    # Read from the trial's storage folder: Trial.error_file points into the local Ray session, which needs Ray.
    name = trial.run_metadata.error_filename
    relative = location.relative(trial.path)
    if trial.status != "ERROR" or not name or relative is None or not location.exists(f"{relative}/{name}"):
        return ""
    lines = [line.strip() for line in location.read_text(f"{relative}/{name}").splitlines() if line.strip()]
    # Ray's error file is a traceback; its last line holds the exception and message.
    return lines[-1] if lines else ""
