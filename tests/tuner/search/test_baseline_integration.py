"""A search with a baseline trial (search.baseline), through the CLI on the tiny local Llama with real Ray Tune
trials: the baseline runs at the user's settings (outside the space) to the end, Optuna never hears of it, it never
ranks, and the last lines compare the winner with it on the test split."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest

from tuner.experiment.folder import Experiment
from tests.conftest import REPO
from tests.tuner.search.test_search_integration import run_cli

pytestmark = pytest.mark.integration

BASELINE = "search.baseline={train.beta: 0.1, train.learning_rate: 5.0e-6}"


def test_a_search_with_a_baseline_ends_with_what_it_gained_over_the_users_settings(tiny_llama, tmp_path):
    done = run_cli("dpo.yaml", tiny_llama, tmp_path, "with-baseline", "search.num_samples=2", BASELINE)
    assert "Traceback" not in done.stderr
    assert "baseline: one more trial at train.beta=0.1, train.learning_rate=5e-06, lora.r=8" in done.stdout
    experiment = Experiment.open(tmp_path / "with-baseline")
    trials = experiment.trials
    assert len(trials) == 3 and trials["baseline"].sum() == 1
    (baseline,) = trials[trials["baseline"]].to_dict("records")
    assert baseline["status"] == "finished"  # never raced: it trains the full budget
    assert baseline["config/train.learning_rate"] == 5e-6 and baseline["beta"] == 0.1  # outside the space
    assert baseline["trial_id"] not in set(experiment.ranking()["trial_id"])
    assert len(experiment.ranking()) == 2 and experiment.best().trial_id != baseline["trial_id"]
    study = optuna.load_study(study_name="with-baseline", storage=f"sqlite:///{experiment.optuna_file}")
    assert len(study.trials) == 2  # Optuna learns from the search's own trials only
    assert experiment.best(baseline=True).trial_id == baseline["trial_id"]
    assert f"baseline trial {baseline['trial_id']} (search.baseline; not ranked)" in done.stdout
    last = [line for line in done.stdout.splitlines() if line.strip()][-8:]
    assert any(line.startswith(f"  your baseline {baseline['trial_id']} (train.beta=0.1, "
                               "train.learning_rate=5e-06, lora.r=8, search.baseline)") for line in last), last
    assert any(line.startswith("  winner minus your baseline: ") for line in last), last
    assert any(line.startswith("  against your baseline: ") for line in last), last
    # the report ranks the search's own trials only, and ends with the same comparison
    report = subprocess.run([sys.executable, "-m", "analysis", str(experiment.path), "--out", str(tmp_path / "r")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    ranking = report.stdout.split("all: by ", 1)[1].split("\n\n", 1)[0] if "all: by " in report.stdout else \
        report.stdout.split("dpo: by ", 1)[1].split("\n\n", 1)[0]
    assert baseline["trial_id"] not in ranking
