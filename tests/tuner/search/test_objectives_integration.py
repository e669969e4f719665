"""search_spaces/objectives.yaml on the tiny local Llama through the CLI, with real Ray Tune trials: DPO, IPO, ORPO
and SimPO trials in one search, each through its own TRL loss, ranked on the shared scale, and the end lists each method's
best on the test split."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tuner.experiment.folder import Experiment
from tests.conftest import REPO
from tests.tuner.search.test_search_integration import run_cli

pytestmark = pytest.mark.integration

# One trial per method: the method as a grid (random search samples the scoped keys), IPO's tau fixed small so that
# its loss, (margin - 1/(2 tau))^2, is far from DPO's log 2 at the first step.
ONE_EACH = ["search.algorithm=random", "search.num_samples=1", "search.test_top_k=1",
            "search.space.method={type: grid, values: [dpo, ipo, orpo, simpo]}",
            "search.space.ipo.train.beta={type: grid, values: [0.1]}", "scheduler.type=none"]


def test_objectives_runs_each_method_through_its_own_loss_and_ends_with_each_methods_best(tiny_llama, tmp_path):
    done = run_cli("objectives.yaml", tiny_llama, tmp_path, "objectives", *ONE_EACH)
    assert "Traceback" not in done.stderr
    experiment = Experiment.open(tmp_path / "objectives")
    trials = experiment.trials
    assert sorted(trials["method"]) == ["dpo", "ipo", "orpo", "simpo"] and set(trials["status"]) == {"finished"}
    history = experiment.history.merge(trials[["trial_id", "method"]], on="trial_id")
    first_loss = history.dropna(subset=["loss"]).groupby("method")["loss"].first()
    assert first_loss["ipo"] == pytest.approx((1 / (2 * 0.1)) ** 2, rel=0.2)  # IPO's squared loss, not DPO's
    assert first_loss["dpo"] == pytest.approx(0.693, rel=0.2)
    assert history.loc[history["method"] == "ipo", "eval_rewards/margins"].notna().all()
    assert history["eval_pref_accuracy"].notna().all()  # one scale for every method
    out = done.stdout.splitlines()
    start = out.index("  each method's best on the test split (searched groups; difference from the base model, "
                      "paired):")
    assert sorted(line.split()[0] for line in out[start + 1:start + 5]) == ["dpo", "ipo", "orpo", "simpo"]
    assert out[start + 5].split()[1] == "won;" and "  verdict: " in done.stdout

    # the report draws every method's curves on the shared scale; the IPO trial exports as any other
    report = subprocess.run([sys.executable, "-m", "analysis", str(experiment.path), "--out", str(tmp_path / "report")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "all: by eval_pref_accuracy (max, best)" in report.stdout
    assert "ipo: by eval_rewards/margins (max, best)" in report.stdout  # and each method on its own metric
    assert "orpo: by eval_log_odds_ratio (max, best)" in report.stdout
    assert "simpo: by eval_rewards/margins (max, best)" in report.stdout
    ipo_trial = trials.loc[trials["method"] == "ipo", "trial_id"].item()
    exported = subprocess.run([sys.executable, "-m", "tuner.export", str(experiment.path), "--trial", ipo_trial,
                               "--out", str(tmp_path / "ipo-adapter")], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert json.loads((tmp_path / "ipo-adapter" / "trial.json").read_text())["trial_id"] == ipo_trial
    assert "IPO" in (tmp_path / "ipo-adapter" / "README.md").read_text()
