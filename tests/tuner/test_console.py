"""The quiet console: the trial table's content, its throttling, and a trial's output going to its own log."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tuner import console
from tuner.search.callbacks import TrialTable


def fake_trial(trial_id, status="RUNNING", beta=0.1):
    return SimpleNamespace(trial_id=trial_id, status=status, config={"train.beta": beta}, path=f"/r/{trial_id}")


def test_table_shows_status_step_metric_and_searched_values():
    rows = {"a1": {"status": "DONE", "step": 8, "eval_pref_accuracy": 0.875, "train.beta": 0.25},
            "b2": {"status": "RUNNING", "step": "-", "eval_pref_accuracy": "-", "train.beta": 0.1}}
    lines = console.format_table(rows, "eval_pref_accuracy", ["train.beta"]).splitlines()
    assert lines[0].startswith("trials: 1/2 ended")
    assert lines[1].split() == ["trial", "status", "step", "eval_pref_accuracy", "train.beta"]
    assert lines[2].split() == ["a1", "DONE", "8", "0.875", "0.25"]
    assert lines[3].split() == ["b2", "RUNNING", "-", "-", "0.1"]


def test_table_leaves_a_key_scoped_to_another_method_blank():
    rows = {"a1": {"status": "DONE", "step": 8, "eval_pref_accuracy": 0.875, "method": "dpo",
                   "dpo.train.beta": 0.2, "orpo.train.beta": 6.0}}
    lines = console.format_table(rows, "eval_pref_accuracy", ["method", "dpo.train.beta", "orpo.train.beta"])
    assert lines.splitlines()[2].split() == ["a1", "DONE", "8", "0.875", "dpo", "0.2", "-"]


def test_callback_prints_at_most_every_interval_and_names_an_errored_trial_log(capsys):
    table = TrialTable("m", ["train.beta"], every_s=3600)
    trials = [fake_trial("a"), fake_trial("b", beta=0.3)]
    for trial in trials:
        table.on_trial_start(0, trials, trial)
    table.on_trial_result(0, trials, trials[0], {"step": 4, "m": 0.5})
    assert capsys.readouterr().out == ""  # within the interval: nothing
    table.on_trial_error(0, trials, trials[1])
    assert capsys.readouterr().out.strip() == f"trial b failed; its log: /r/b/{console.TRIAL_LOG}"
    eager = TrialTable("m", ["train.beta"], every_s=0)
    eager.on_trial_result(0, trials, trials[0], {"step": 4, "m": 0.5})
    out = capsys.readouterr().out
    assert [line.split() for line in out.splitlines()[2:]] == [["a", "RUNNING", "4", "0.5", "0.1"],
                                                               ["b", "RUNNING", "-", "-", "0.3"]]


def test_trial_output_goes_to_its_log_file(tmp_path):
    code = (f"import os, sys; from tuner import console; console.trial_output_to_log({str(tmp_path)!r}); "
            "print('from python'); os.system('echo from a subprocess'); sys.stderr.write('to stderr\\n')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    log = (tmp_path / console.TRIAL_LOG).read_text()
    assert "from python" in log and "from a subprocess" in log and "to stderr" in log


def test_a_failing_trial_writes_its_traceback_to_its_own_output(capsys):
    def trial(config, **kwargs):
        raise ValueError(f"bad optimizer {config['optim']}")

    wrapped = console.errors_to_log(trial)
    assert wrapped.__name__ == "trial"  # Tune names the trainable after it
    with pytest.raises(ValueError, match="bad optimizer x"):  # Tune still sees the error and marks the trial
        wrapped({"optim": "x"}, verbose=False)
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "ValueError: bad optimizer x" in err
    with pytest.raises(ValueError):
        wrapped({"optim": "x"}, verbose=True)  # verbose: Tune prints its own copy
    assert capsys.readouterr().err == ""


def test_a_quiet_driver_drops_tunes_trial_tracebacks():
    code = ("import logging; from tuner import console; console.quiet_environment(); console.quiet_libraries(); "
            "logging.getLogger('ray.tune.execution.tune_controller').error('Trial task failed for trial x'); "
            "logging.getLogger('ray.tune.tune').error('Trials did not complete: [x]'); print('done')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    assert "Trial" not in done.stderr, done.stderr


def test_table_gaps_double_up_to_the_longest(capsys, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    table = TrialTable("m", [], every_s=30, longest_s=100)
    trials = [fake_trial("a")]
    printed_at = []
    for t in range(0, 400, 5):  # a report every 5 s
        now[0] = float(t)
        table.on_trial_result(0, trials, trials[0], {"step": t, "m": 0.5})
        if capsys.readouterr().out:
            printed_at.append(t)
    assert printed_at == [30, 90, 190, 290, 390]  # gaps 30, 60, 100 (120 capped), 100, 100
