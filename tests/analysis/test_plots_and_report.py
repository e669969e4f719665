from __future__ import annotations

import math
from pathlib import Path

import yaml
from PIL import Image

from analysis import plots, report
from tuner.experiment.folder import Experiment
from tuner.spec import validate_spec
from tuner.experiment.ranking import rank_trials
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


def test_pareto_front_keeps_the_points_no_other_beats_on_both_axes():
    # (accuracy, distance): base (0.8, 0); a dominates b; c is more accurate but further
    assert plots.pareto_front([0.8, 0.9, 0.85, 0.95], [0.0, 0.1, 0.2, 0.5]) == [True, True, False, True]
    assert plots.pareto_front([0.8, 0.8], [0.1, 0.1]) == [True, True]  # equal points do not beat each other


def test_accuracy_vs_drift_figure(tmp_path):
    import pandas as pd

    points = pd.DataFrame({"label": ["base", "t1", "t2"], "accuracy": [0.8, 0.9, 0.85], "drift": [0.0, -0.3, 0.5]})
    path = plots.plot_accuracy_vs_drift(points, tmp_path, "test", "t")
    assert path.name == "accuracy_vs_drift_test.png" and Image.open(path).size[0] > 500
    assert plots.plot_accuracy_vs_drift(points.head(1), tmp_path, "x", "t") is None
    empty = pd.DataFrame(columns=["label", "accuracy", "drift"])  # no trial reported eval_drift
    assert plots.plot_accuracy_vs_drift(empty, tmp_path, "eval", "t") is None


def test_report_holds_the_test_verdict_per_group_table_and_regressions(tmp_path):
    from tests.tuner.evidence.test_verdict import split

    experiment = fabricated_experiment(tmp_path)
    ranked = rank_trials(experiment.trials, experiment.history, "eval_rewards/margins")
    test = split(base=[1, 1, 0, 0, 1, 0], trials={"a": [1, 0, 1, 1, 1, 0]}, groups=list("xxyyxy"))
    test.pairs.loc[1, "prompt"] = "a | pipe " + "long " * 40
    written = report.write(report.Report("t", experiment, {"dpo": ranked}, [], [], test), tmp_path)
    markdown = written["markdown"].read_text()
    assert "## Test split: how much to trust the winner" in markdown
    assert "  verdict: the winner is not distinguishable from the base model on the test split" in markdown
    per_group = markdown.split("### Test preference accuracy per group", 1)[1].split("###", 1)[0]
    assert "| x | 3 | 1 | 0.6667 |" in per_group and "| y | 3 | 0 | 0.6667 |" in per_group
    regressed = markdown.split("### Regressions:", 1)[1].split("###", 1)[0]
    assert regressed.count("| p1 |") == 1 and "a \\| pipe" in regressed and "..." in regressed
    improved = markdown.split("### Improvements:", 1)[1].split("##", 1)[0]
    assert "| p2 |" in improved and "| p3 |" in improved
    html = written["html"].read_text()
    assert "Regressions: test pairs the base model gets right and the winner gets wrong" in html


def test_keys_scoped_to_one_method_plot_its_trials_and_paste_as_the_winners_own_key(tmp_path):
    import pandas as pd

    ranked = pd.DataFrame([
        {"rank": 1, "trial_id": "a", "score": 0.9, "method": "orpo", "config/method": "orpo",
         "config/dpo.train.beta": math.nan, "config/orpo.train.beta": 6.0},
        {"rank": 2, "trial_id": "b", "score": 0.8, "method": "dpo", "config/method": "dpo",
         "config/dpo.train.beta": 0.2, "config/orpo.train.beta": math.nan}])
    assert yaml.safe_load(report.best_config_yaml(ranked)) == {"method": "orpo", "train": {"beta": 6.0}}
    written = plots.plot_parameters(ranked, tmp_path)
    assert {p.name for p in written} >= {"param_dpo.train.beta.png", "param_orpo.train.beta.png"}
