"""Reading what Ray Tune wrote into an experiment folder, as two DataFrames: `trials` (one row per trial: status,
method, sampled config, error, folder) and `history` (one row per report: every metric, and the checkpoint that came
with it while it is kept). The one reader of Tune's files; `tuner.experiment.Experiment` calls it lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tuner.ranking import CHECKPOINT_COLUMN


def read(path: Path, default_method: str, default_beta) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`default_beta(method)` gives beta where a trial's config does not set it (TRL's own default)."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(path))
    rows, histories = [], []
    for trial in analysis.trials:
        frame = analysis.trial_dataframes.get(trial.trial_id, pd.DataFrame())
        if not frame.empty:
            frame = frame.assign(trial_id=trial.trial_id)
            frame[CHECKPOINT_COLUMN] = [_kept_checkpoint(trial.path, name) for name in
                                        frame.get("checkpoint_dir_name", pd.Series([None] * len(frame)))]
            histories.append(frame)
        rows.append(_trial_row(trial, frame, default_method, default_beta))
    trials = pd.DataFrame(rows)
    history = (pd.concat(histories, ignore_index=True) if histories
               else pd.DataFrame(columns=["trial_id", CHECKPOINT_COLUMN]))
    return trials, history


def _kept_checkpoint(trial_path: str, name: Any) -> str | float:
    # Tune deletes a checkpoint once keep_checkpoints better ones exist; its report stays in the history.
    if not isinstance(name, str) or not name:
        return float("nan")
    folder = Path(trial_path) / name
    return str(folder) if folder.is_dir() else float("nan")


def _trial_row(trial, frame: pd.DataFrame, default_method: str, default_beta) -> dict[str, Any]:
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
        "error": _first_error_line(trial),
        "path": trial.path,
        **config,
    }


def _first_error_line(trial) -> str:
    # Read from the trial's storage folder: Trial.error_file points into the local Ray session, which needs Ray.
    name = trial.run_metadata.error_filename
    error_file = Path(trial.path) / name if name else None
    if trial.status != "ERROR" or error_file is None or not error_file.is_file():
        return ""
    lines = [line.strip() for line in error_file.read_text().splitlines() if line.strip()]
    # Ray's error file is a traceback; its last line holds the exception and message.
    return lines[-1] if lines else ""
