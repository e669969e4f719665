"""Reading what Ray Tune wrote into an experiment folder, as two DataFrames: `trials` (one row per trial: status,
method, sampled config, error, folder) and `history` (one row per report: every metric, and the checkpoint that came
with it while it is kept). The one reader of Tune's files; `tuner.experiment.folder.Experiment` calls it lazily.

Only JSON and CSV are read, never a pickle: Ray's `ExperimentAnalysis` rebuilds each trial from the experiment
state by unpickling fields embedded in it, which runs whatever code a planted folder holds. Everything tuner needs is
plain JSON beside those fields: each trial's id, status, config and folder in `experiment_state-*.json`, its error
file in the run metadata, its reports in the trial folder's `result.json` (else `progress.csv`).

It reads through the experiment's pyarrow filesystem (tuner.experiment.storage.Location), so a folder in object storage
reads like a local one; folders (`path`, `checkpoint_path`) are given as the location gives them: local paths, or URIs.
"""

from __future__ import annotations

import fnmatch
import io
import json
import posixpath
from typing import Any

import pandas as pd

from tuner.experiment.ranking import CHECKPOINT_COLUMN
from tuner.experiment.storage import Location
from tuner.trial import methods
from tuner.spec.loading import BASELINE_KEY

STATE_PATTERN = "experiment_state-*.json"  # Tune's TuneController.CKPT_FILE_TMPL
RESULT_FILE, PROGRESS_FILE = "result.json", "progress.csv"


def read(location: Location, default_method: str, default_beta) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`default_beta(method)` gives beta where a trial's config does not set it (TRL's own default); raises
    ValueError when the folder holds no experiment state."""
    rows, histories = [], []
    for trial in _trials(location):
        listing = location.listing(trial["relative"])
        frame = _history(location, trial, listing)
        if not frame.empty:
            frame = frame.assign(trial_id=trial["trial_id"])
            kept = {name: location.uri_of(posixpath.join(location.fs_path, trial["relative"], name))
                    for name, is_folder in listing.items() if is_folder and name.startswith("checkpoint_")}
            # Tune deletes a checkpoint once keep_checkpoints better ones exist; its report stays in the history.
            frame[CHECKPOINT_COLUMN] = [kept.get(name, float("nan")) if isinstance(name, str) else float("nan")
                                        for name in frame.get("checkpoint_dir_name", pd.Series([None] * len(frame)))]
            histories.append(frame)
        rows.append(_trial_row(location, trial, listing, frame, default_method, default_beta))
    trials = pd.DataFrame(rows)
    history = (pd.concat(histories, ignore_index=True) if histories
               else pd.DataFrame(columns=["trial_id", CHECKPOINT_COLUMN]))
    return trials, history


def _trials(location: Location) -> list[dict[str, Any]]:
    """Each trial of the newest experiment snapshot, from its JSON fields only (the pickled ones stay unread)."""
    snapshots = sorted(name for name, is_folder in location.listing().items()
                       if not is_folder and fnmatch.fnmatch(name, STATE_PATTERN))  # newest last: timestamps
    if not snapshots:
        raise ValueError(f"no experiment snapshot {STATE_PATTERN} in {location.uri}")
    trials = []
    try:
        state = json.loads(location.read_text(snapshots[-1]))  # plain json: embedded pickles stay strings
        for trial_json, metadata_json in state["trial_data"]:
            trial, metadata = json.loads(trial_json), json.loads(metadata_json)
            # As Tune reads a snapshot: a trial it calls running is pending until a driver runs it again.
            status = "PENDING" if trial["status"] == "RUNNING" else trial["status"]
            trials.append({"trial_id": trial["trial_id"], "status": status, "config": trial.get("config") or {},
                           "relative": trial["relative_logdir"],
                           "path": location.uri_of(posixpath.join(location.fs_path, trial["relative_logdir"])),
                           "error_file": metadata.get("error_filename"),
                           "reported": metadata.get("last_result") is not None})
    except (KeyError, TypeError) as error:
        raise ValueError(f"{snapshots[-1]}: not an experiment snapshot as Tune writes it ({error!r})") from None
    return trials


def _history(location: Location, trial: dict[str, Any], listing: dict[str, bool]) -> pd.DataFrame:
    """Every report of a trial, flattened as Tune's ExperimentAnalysis.trial_dataframes flattens it."""
    if not trial["reported"]:
        return pd.DataFrame()
    if RESULT_FILE in listing:
        lines = location.read_text(f"{trial['relative']}/{RESULT_FILE}").rstrip("\n")
        return pd.json_normalize([json.loads(line) for line in lines.split("\n")], sep="/") if lines \
            else pd.DataFrame()
    if PROGRESS_FILE in listing:
        return pd.read_csv(io.StringIO(location.read_text(f"{trial['relative']}/{PROGRESS_FILE}")),
                           dtype={"trial_id": str})
    return pd.DataFrame()


def _trial_row(location: Location, trial: dict[str, Any], listing: dict[str, bool], frame: pd.DataFrame,
               default_method: str, default_beta) -> dict[str, Any]:
    last = frame.iloc[-1] if not frame.empty else {}
    finished_all_steps = not frame.empty and last.get("step", -1) >= last.get("max_steps", float("inf"))
    if trial["status"] == "ERROR":
        status = "errored"
    elif trial["status"] == "TERMINATED":
        status = "finished" if finished_all_steps else "stopped early"
    else:
        status = trial["status"].lower()
    config = trial["config"]
    method = config.get("method", default_method)
    applied = methods.for_method(config, method)
    return {
        "trial_id": trial["trial_id"],
        "status": status,
        "method": method,
        "beta": float(applied.get("train.beta", default_beta(method))),
        "reports": len(frame),
        "error": _first_error_line(location, trial, listing),
        "path": trial["path"],
        # the trial at the user's own settings (search.baseline): compared with the winner, never ranked
        "baseline": bool(config.get(BASELINE_KEY, False)),
        # a key scoped to another method (orpo.train.beta on a DPO trial) was sampled but not used: left blank
        **{f"config/{k}": v for k, v in config.items()
           if k != BASELINE_KEY and methods.scoped(k)[0] in (None, method)},
    }


def _first_error_line(location: Location, trial: dict[str, Any], listing: dict[str, bool]) -> str:
    # Read from the trial's storage folder: Ray's error file is a traceback; its last line holds the exception.
    name = trial["error_file"]
    if trial["status"] != "ERROR" or not name or name not in listing:
        return ""
    lines = [line.strip() for line in location.read_text(f"{trial['relative']}/{name}").splitlines() if line.strip()]
    return lines[-1] if lines else ""
