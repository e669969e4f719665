"""Tune's callbacks in a search: the study's upload beside results in object storage, W&B without the API key in
Ray's runtime env, the result-file writers that keep a resumed trial's own files, and the compact trial table.

Imports Ray Tune: imported only by the function that builds the Tuner (tuner.search.build).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ray
from ray import tune
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.air.util.node import _force_on_current_node
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from tuner.console import LONGEST_GAP_S, REFRESH_S, TRIAL_LOG, format_table
from tuner.experiment.folder import Experiment


class StudyUpload(tune.Callback):
    """Uploads the SQLite study beside the results in object storage at every trial's end and whenever Tune saves
    its experiment state (tuner.search.build.study_upload)."""

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


class KeepOwnFiles:
    """A Tune result-file writer that keeps the files a trial has (tuner.search.build.result_file_callbacks)."""

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if not os.path.exists(os.path.join(trial.local_path, file_name)):
            super()._restore_from_remote(file_name, trial)


class JsonResults(KeepOwnFiles, JsonLoggerCallback):
    """Tune's result.json writer, keeping a resumed trial's own file."""


class CsvProgress(KeepOwnFiles, CSVLoggerCallback):
    """Tune's progress.csv writer, keeping a resumed trial's own file."""


class TrialTable(tune.Callback):
    """Prints one compact table of the trials (status, step, last metric, searched values) when a trial reports
    `every_s` seconds after the last table, the gap doubling each time up to `longest_s`; and one line when a trial
    ends in an error. Quiet runs print it in place of Tune's own table."""

    def __init__(self, metric: str, searched: list[str], every_s: float = REFRESH_S, longest_s: float = LONGEST_GAP_S):
        self.metric, self.searched, self.longest_s = metric, searched, longest_s
        self.rows: dict[str, dict] = {}
        self.last_print = time.monotonic()
        self.gap = every_s

    def _row(self, trial) -> dict:
        return self.rows.setdefault(trial.trial_id, {"status": "RUNNING", "step": "-", self.metric: "-",
                                                     **{k: trial.config.get(k) for k in self.searched}})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._row(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        row["step"] = result.get("step", row["step"])
        if self.metric in result:
            row[self.metric] = result[self.metric]
        if time.monotonic() - self.last_print >= self.gap:
            self.print_table(trials)
            self.gap = min(2 * self.gap, self.longest_s)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._row(trial)["status"] = "DONE"

    def on_trial_error(self, iteration, trials, trial, **info):
        self._row(trial)["status"] = "ERROR"
        print(f"trial {trial.trial_id} failed; its log: {Path(trial.path) / TRIAL_LOG}", flush=True)

    def print_table(self, trials) -> None:
        self.last_print = time.monotonic()
        for trial in trials:
            self._row(trial)["status"] = {"TERMINATED": "DONE"}.get(trial.status, trial.status)
        print(format_table(self.rows, self.metric, self.searched), flush=True)
