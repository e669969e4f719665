"""Searches that go wrong: a trial that fails, a driver killed with SIGKILL and resumed, and what a run leaves for
monitoring (TensorBoard, W&B offline) and for security (folder permissions)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuner.search import cluster
from tuner.experiment.folder import Experiment
from tuner.experiment.ranking import rank_trials
from tests.conftest import REPO, spec_path
from tests.tuner.search.test_search_integration import FAST, run_cli

pytestmark = pytest.mark.integration


def test_a_failing_trial_ends_errored_and_the_search_goes_on(tiny_llama, tmp_path):
    done = run_cli("dpo.yaml", tiny_llama, tmp_path, "fail", "search.num_samples=2", "scheduler.type=none",
                   "search.algorithm=random",
                   "search.space.train.optim={type: choice, values: [adamw_torch, no_such_optimizer]}",
                   "search.points_to_evaluate=[{train.optim: adamw_torch}, {train.optim: no_such_optimizer}]")
    experiment = Experiment.open(tmp_path / "fail")
    statuses = dict(zip(experiment.trials["config/train.optim"], experiment.trials["status"]))
    assert statuses == {"adamw_torch": "finished", "no_such_optimizer": "errored"}
    errored = experiment.trials[experiment.trials["status"] == "errored"].iloc[0]
    assert "no_such_optimizer" in errored["error"]
    assert f"errored trial {errored['trial_id']}: " in done.stdout
    # the console names the errored trial's log, and that log (not the console) holds the traceback
    log = Path(errored["path"]) / "trial.log"
    assert f"trial {errored['trial_id']} failed; its log: {log}" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr and "ERROR" not in done.stderr
    assert "Traceback" in log.read_text() and "no_such_optimizer is not a valid" in log.read_text()
    ranked = rank_trials(experiment.trials, experiment.history, "eval_rewards/margins")
    assert ranked.iloc[0]["trial_id"] != errored["trial_id"] and ranked.iloc[0]["rank"] == 1
    assert ranked.set_index("trial_id").loc[errored["trial_id"], "rank"] != 1


def test_results_folder_is_private_and_holds_tensorboard_and_wandb_offline_runs(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    done = run_cli("dpo.yaml", tiny_llama, tmp_path, "mon", "search.num_samples=1", "scheduler.type=none",
                   "run.wandb=offline")
    path = tmp_path / "mon"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert f"TensorBoard: tensorboard --logdir {path}" in done.stdout
    assert list(path.glob("run_trial_*/events.out.tfevents.*"))
    runs = list((path / "wandb").glob("wandb/offline-run-*"))
    assert len(runs) == 1
    records = next(runs[0].glob("run-*.wandb")).read_bytes()  # W&B's offline log, synced later as it is
    assert b"eval_rewards/margins" in records and b"eval_pref_accuracy" in records
    assert "wandb sync" in done.stdout


def finished_in_saved_state(path: Path) -> int:
    """How many trials the experiment state Tune last saved calls finished (0 while there is none to read yet)."""
    try:
        trials = Experiment.open(path).trials
    except Exception:  # not written yet, or caught mid-write
        return 0
    return int((trials["status"] == "finished").sum())


def test_sigkill_driver_then_resume_keeps_finished_trials(tiny_llama, tmp_path):
    path = tmp_path / "killed"
    command = [sys.executable, "-m", "tuner.run", str(spec_path("dpo.yaml")), f"model.name={tiny_llama}",
               f"run.storage_path={tmp_path}", "--name", "killed", *FAST, "search.num_samples=4",
               "search.max_concurrent_trials=1", "scheduler.type=none", "train.max_steps=6"]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and finished_in_saved_state(path) < 1:
        time.sleep(1)  # Tune saves its experiment state every few seconds: kill once it records a finished trial
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = Experiment.open(path)
    finished = before.trials[before.trials["status"] == "finished"]
    assert len(finished) >= 1, before.trials[["trial_id", "status"]]
    rows_before = {t: len((Path(p) / "result.json").read_text().splitlines())
                   for t, p in zip(finished["trial_id"], finished["path"])}

    resumed = subprocess.run([sys.executable, "-m", "tuner.run", "--resume", str(path)], cwd=REPO,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = Experiment.open(path)
    assert len(after.trials) == 4
    assert set(after.trials["status"]) == {"finished"}
    for trial_id, path_ in zip(after.trials["trial_id"], after.trials["path"]):
        if trial_id in rows_before:  # not re-run: its report history is as it was
            assert len((Path(path_) / "result.json").read_text().splitlines()) == rows_before[trial_id]
        steps = list(after.history.loc[after.history["trial_id"] == trial_id, "step"])
        assert steps == sorted(set(steps)), (trial_id, steps)  # a resumed trial continues, never starts over
    import optuna

    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{path / 'tuner' / 'optuna.db'}")
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 4


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; kill, timeout, a scheduler
def test_ctrl_c_or_sigterm_stops_cleanly_and_prints_the_resume_command(stop_signal, tiny_llama, tmp_path):
    path = tmp_path / "interrupted"
    command = [sys.executable, "-m", "tuner.run", str(spec_path("dpo.yaml")), f"model.name={tiny_llama}",
               f"run.storage_path={tmp_path}", "--name", "interrupted", *FAST, "search.num_samples=3",
               "search.max_concurrent_trials=1", "scheduler.type=none", "train.max_steps=8"]
    started = time.time()
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and len(list(path.glob("run_trial_*"))) < 2:
        time.sleep(1)
    driver.send_signal(stop_signal)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 130, out[-2000:] + err[-2000:]
    assert f"continue it with:\n  python -m tuner.run --resume {path}" in out
    assert "Top trials by eval_pref_accuracy" in out
    assert "SIGTERM received" not in err  # Ray's C++ handler would abort the driver with a stack dump
    # Ray stopped, its folder gone (an older one, of a killed driver that had the same pid, may be left)
    private = Path(cluster.TEMP_ROOT).glob(f"tuner-{os.getuid()}-{driver.pid}-*")
    assert not [d for d in private if d.stat().st_mtime > started - 1]


def cli(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner.run", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RAY_DEDUP_LOGS": "0", **(env or {})})


def test_a_search_where_every_trial_fails_ends_with_their_errors_and_exit_1(tiny_llama, tmp_path):
    done = cli(str(spec_path("dpo.yaml")), f"model.name={tiny_llama}", f"run.storage_path={tmp_path}", "--name",
               "allfail", *FAST, "search.num_samples=2", "scheduler.type=none", "lora.target_modules=[no_such_module]")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    experiment = Experiment.open(tmp_path / "allfail")
    assert list(experiment.trials["status"]) == ["errored", "errored"]
    for trial_id in experiment.trials["trial_id"]:
        assert f"errored trial {trial_id}: " in done.stdout
    assert "No trial reported eval_pref_accuracy: 2 trial(s), 2 errored" in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tuner: all 2 trials failed (first error: ") and "no_such_module" in last, last
    assert "Traceback" not in done.stdout + done.stderr and "UnknownMetric" not in done.stderr


def test_sigkill_while_preparing_then_resume_finishes_and_a_moved_folder_resumes(tiny_llama, tmp_path):
    args = [str(spec_path("dpo.yaml")), f"model.name={tiny_llama}", f"run.storage_path={tmp_path}", "--name",
            "killed", *FAST, "search.num_samples=1", "scheduler.type=none"]
    path = tmp_path / "killed"
    killed = cli(*args, env={"TUNER_FAULT": "prepare.reference"})  # data saved, reference pass not run
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert Experiment(path).spec_file.is_file() and not Experiment(path).is_prepared
    again = cli(*args)
    assert again.returncode == 2 and f"--resume {path}" in again.stderr

    resumed = cli("--resume", str(path))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "the driver stopped before Tune saved any state (while preparing)" in resumed.stdout
    assert "reference log-probs: computed once" in resumed.stdout
    assert list(Experiment.open(path).trials["status"]) == ["finished"]

    moved = tmp_path / "elsewhere" / "killed"
    moved.parent.mkdir()
    path.rename(moved)  # the Optuna study's absolute path inside Tune's pickles is now stale
    again = cli("--resume", str(moved))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Top trials by eval_pref_accuracy" in again.stdout and not path.exists()
    import optuna

    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{moved / 'tuner' / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
