from __future__ import annotations

import math
from pathlib import Path

import yaml
from PIL import Image

from analysis import plots, report
from tuner.experiment import Experiment
from tuner.spec import validate_spec
from tuner.ranking import rank_trials
from tests.analysis.fabricated import frames


def fabricated_experiment(tmp_path: Path) -> Experiment:
    trials, history = frames({"a": [0.1, 0.5], "b": [0.2, 0.3], "x": [math.nan]}, status={"x": "errored"},
                             betas={"a": 0.1, "b": 0.3, "x": 0.2})
    history["rewards/margins"] = history["eval_rewards/margins"] * 0.9
    trials["error"] = ["", "", "RuntimeError: CUDA out of memory"]
    spec = {"method": "dpo", "search": {"space": {"train.beta": {"type": "loguniform", "low": 0.05, "high": 0.5}}}}
    return Experiment(tmp_path, spec=validate_spec(spec), trials=trials, history=history)


def test_curves_one_figure_per_reported_metric(tmp_path):
    experiment = fabricated_experiment(tmp_path)
    written = plots.plot_curves(experiment.history, "a", tmp_path / "figures")
    assert [p.name for p in written] == ["loss.png", "rewards_margins.png", "rewards_accuracies.png"]
    for path in written:
        assert Image.open(path).size[0] > 500


def test_parameter_scatter_and_importances(tmp_path):
    experiment = fabricated_experiment(tmp_path)
    ranked = rank_trials(experiment.trials, experiment.history, "eval_rewards/margins")
    assert [p.name for p in plots.plot_parameters(ranked, tmp_path)] == ["param_train.beta.png"]
    assert plots.plot_importances({}, tmp_path) is None
    assert plots.plot_importances({"train.beta": 0.7, "lora.r": 0.3}, tmp_path).is_file()


def test_report_holds_ranking_best_config_errors_and_embedded_images(tmp_path):
    experiment = fabricated_experiment(tmp_path)
    ranked = rank_trials(experiment.trials, experiment.history, "eval_rewards/margins")
    figures = plots.plot_curves(experiment.history, "a", tmp_path / "figures")
    written = report.write(report.Report("t", experiment, {"dpo": ranked}, figures, ["a note"]), tmp_path)
    markdown = written["markdown"].read_text()
    assert "| 1 | a |" in markdown.replace("1.0", "1") or "| 1 | a " in markdown
    assert "RuntimeError: CUDA out of memory" in markdown
    assert "![loss](figures/loss.png)" in markdown
    snippet = markdown.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(snippet) == {"train": {"beta": 0.1}}
    html = written["html"].read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    assert "a note" in html and "<table" in html
    csv = written["csv:dpo"].read_text().splitlines()
    assert csv[0].startswith("trial_id") and len(csv) == 4
    counts = report.counts(experiment)
    assert counts["trials"] == 3 and counts["by status"] == {"finished": 2, "errored": 1}
