"""Searches that sample nothing, through the CLI on the tiny local Llama: a spec without a space runs its fixed
settings (repeats over training seeds), choices of one value run under Optuna, and a space that no trial can use
is one line and exit 2. A grid listed in points_to_evaluate: test_search_integration's seed_beta test."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tuner.experiment.folder import Experiment
from tests.conftest import REPO, spec_path
from tests.tuner.search.test_search_integration import run_cli

pytestmark = pytest.mark.integration

# The spec: dpo.yaml without its space, at hand-picked settings
HAND_PICKED = ["search.space={}", "train.beta=0.1", "train.learning_rate=5.0e-6"]


def test_a_spec_without_a_space_runs_its_settings_over_training_seeds_and_ends_with_the_verdict(tiny_llama, tmp_path):
    dry = subprocess.run([sys.executable, "-m", "tuner.run", str(spec_path("dpo.yaml")), *HAND_PICKED,
                          "search.num_samples=1", "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "search: fixed settings, 1 trial(s)" in dry.stdout and "Optuna has nothing to choose" in dry.stdout

    done = run_cli("dpo.yaml", tiny_llama, tmp_path, "fixed", *HAND_PICKED, "search.num_samples=2")
    assert "Traceback" not in done.stderr
    assert "the settings run 2 times, on training seeds 0, 1 (train.seed)" in done.stdout
    experiment = Experiment.open(tmp_path / "fixed")
    trials = experiment.trials
    assert sorted(trials["config/train.seed"]) == [0, 1] and set(trials["status"]) == {"finished"}
    assert set(trials["beta"]) == {0.1}  # the spec's own settings, in every trial
    assert not experiment.has_study  # Optuna had nothing to sample
    assert "noise floor: the same settings over training seeds" in done.stdout
    assert "  2 seeds: " in done.stdout
    assert "Top trials by eval_pref_accuracy (max):" in done.stdout and "  verdict: " in done.stdout
    histories = [list(reports["eval_pref_margin"]) for _, reports in experiment.history.groupby("trial_id")]
    assert histories[0] != histories[1]  # another seed trained another adapter


def test_choices_of_one_value_run_as_fixed_settings_under_optuna(tiny_llama, tmp_path):
    space = "search.space={train.beta: {type: choice, values: [0.2]}, lora.r: {type: choice, values: [4]}}"
    done = run_cli("dpo.yaml", tiny_llama, tmp_path, "one-choice", space, "search.num_samples=1")
    assert "Traceback" not in done.stderr and "search: fixed settings, 1 trial(s)" in done.stdout
    (trial,) = Experiment.open(tmp_path / "one-choice").trials.to_dict("records")
    assert trial["config/train.beta"] == 0.2 and trial["config/lora.r"] == 4 and trial["status"] == "finished"
    assert "  verdict: " in done.stdout


def test_a_space_of_keys_scoped_to_a_method_no_trial_runs_is_one_line_and_exit_2(tmp_path):
    space = ("search.space={orpo.train.beta: {type: loguniform, low: 2, high: 8}, "
             "orpo.train.learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-3}}")
    done = subprocess.run([sys.executable, "-m", "tuner.run", str(spec_path("dpo.yaml")), space,
                           f"run.storage_path={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    problems = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
    assert [p.split(":")[0] for p in problems] == ["  - search.space.orpo.train.beta",
                                                   "  - search.space.orpo.train.learning_rate"]
    assert all("scoped to orpo, which no trial of this search runs" in p for p in problems)
    assert not any(tmp_path.iterdir())  # nothing written
