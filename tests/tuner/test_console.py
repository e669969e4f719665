"""The quiet console: the trial table's content, its throttling, and a trial's output going to its own log."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

from tuner import console


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


def test_callback_prints_at_most_every_interval_and_names_an_errored_trial_log(capsys):
    table = console.trial_table_callback("m", ["train.beta"], every_s=3600)
    trials = [fake_trial("a"), fake_trial("b", beta=0.3)]
    for trial in trials:
        table.on_trial_start(0, trials, trial)
    table.on_trial_result(0, trials, trials[0], {"step": 4, "m": 0.5})
    assert capsys.readouterr().out == ""  # within the interval: nothing
    table.on_trial_error(0, trials, trials[1])
    assert capsys.readouterr().out.strip() == f"trial b failed; its log: /r/b/{console.TRIAL_LOG}"
    eager = console.trial_table_callback("m", ["train.beta"], every_s=0)
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
