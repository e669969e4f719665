"""`python -m analysis RESULTS_DIR [--metric M] [--mode max|min] [--top K] [--scope best|last] [--out DIR]
[--drift-penalty LAMBDA] [--test-top-k K]`: rank the trials of a tuner experiment (finished, interrupted or still
running) with their intervals, score the top trials and the base model on the test split (once), draw the curves
and the accuracy-vs-drift frontier, and write report.md, report.html and ranking CSVs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis import plots, report
from tuner.evidence import scoring, verdict
from tuner.errors import UserError, guarded
from tuner.experiment.folder import Experiment
from tuner.experiment.ranking import (DRIFT_METRIC, DRIFT_PENALISED, MARGIN_METRIC, PREF_ACCURACY_METRIC, rank_trials,
                           rankings_for, with_drift_penalty)
from tuner.experiment.tables import describe_best, describe_uncertainty, ranking_table
from tuner.experiment.trust import TRUST_HINT, owner_only_files


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", help="an experiment: run.storage_path/NAME, a folder or an s3:// (gs://) URI")
    parser.add_argument("--metric", help="rank on this reported metric (default: the spec's, or per method)")
    parser.add_argument("--mode", choices=["max", "min"], help="default: the spec's search.mode, else max")
    parser.add_argument("--scope", choices=["best", "last"], default="best",
                        help="a trial's best report or its last one (default best)")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--out", type=Path, help="report folder (default RESULTS_DIR/report)")
    parser.add_argument("--drift-penalty", type=float, metavar="LAMBDA",
                        help=f"also rank on {PREF_ACCURACY_METRIC} - LAMBDA x |{DRIFT_METRIC}|: accuracy that does "
                             f"not buy itself with distance from the reference")
    parser.add_argument("--test-top-k", type=int, metavar="K",
                        help="score the top K trials on the test split (default: the spec's search.test_top_k)")
    parser.add_argument(TRUST_HINT, action="store_true",
                        help="read a results folder that another user owns or can write to")
    return parser.parse_args(argv)


def build_rankings(experiment: Experiment, metric, mode, scope, drift_penalty: float | None = None):
    search = experiment.spec.search
    rankings = rankings_for(experiment.ranked_trials(), experiment.history, metric or search.metric, mode or search.mode,
                            scope, experiment.base)
    rankings = {heading: experiment.with_intervals(ranked) for heading, ranked in rankings.items()}
    if drift_penalty is not None:
        history = with_drift_penalty(experiment.history, drift_penalty)
        rankings["drift-penalised"] = rank_trials(experiment.ranked_trials(), history, DRIFT_PENALISED, "max", scope,
                                                  experiment.base)
    return rankings


def drift_points_eval(experiment: Experiment, ranked: pd.DataFrame) -> pd.DataFrame:
    """Each ranked trial's eval preference accuracy and eval drift at its scored report, and the base model."""
    history = experiment.history
    if DRIFT_METRIC not in history or PREF_ACCURACY_METRIC not in history:
        return pd.DataFrame(columns=["label", "accuracy", "drift"])
    rows = [{"label": "base", "accuracy": experiment.base.get(PREF_ACCURACY_METRIC, float("nan")), "drift": 0.0}]
    for _, row in ranked[ranked["rank"].notna()].iterrows():
        report_row = history.loc[int(row["report"])]
        rows.append({"label": row["trial_id"], "accuracy": report_row[PREF_ACCURACY_METRIC],
                     "drift": report_row[DRIFT_METRIC]})
    return pd.DataFrame(rows)


def drift_points_test(test: verdict.ScoredSplit) -> pd.DataFrame:
    rows = [{"label": "base", "accuracy": test.accuracy(test.base).value, "drift": 0.0}]
    rows += [{"label": t.label, "accuracy": test.accuracy(t).value, "drift": test.drift(t)} for t in test.trials]
    return pd.DataFrame(rows)


def notes_for(experiment: Experiment, rankings) -> list[str]:
    notes = []
    if "train.beta" in experiment.spec.search.space and any(r.attrs["metric"] == MARGIN_METRIC for r in rankings.values()):
        notes.append("beta was searched: DPO reward margins scale with beta, so raw margins favour large beta; "
                     "margin/beta compares the policy-vs-reference log-ratios themselves.")
    if experiment.base:
        notes.append("base model: " + ", ".join(f"{k} = {v:.3f}" for k, v in experiment.base.items()) +
                     "; pref_gain is a trial's eval_pref_accuracy minus the base model's.")
    return notes


def main(argv=None) -> int:
    args = parse_args(argv)
    with owner_only_files():
        return guarded("analysis", analyze, args)


def analyze(args) -> int:
    experiment = Experiment.open(args.results_dir, trust=args.trust)
    rankings = build_rankings(experiment, args.metric, args.mode, args.scope, args.drift_penalty)
    if args.test_top_k is not None and args.test_top_k < 0:
        raise UserError(f"--test-top-k: must be 0 or more, got {args.test_top_k}")
    test = scoring.score_test_split(experiment, args.test_top_k)
    out = args.out or experiment.report_dir
    first = next(iter(rankings.values()))
    best = first.iloc[0]["trial_id"] if len(first) and first.iloc[0]["rank"] == 1 else None
    figures = plots.plot_curves(experiment.history, best, out / "figures")
    figures += plots.plot_parameters(first, out / "figures")
    if experiment.spec.search.uses_optuna() and experiment.has_study:
        from tuner.search import study

        storage = study.storage_for(experiment.spec.search.storage, experiment.uri)
        importance = plots.plot_importances(plots.optuna_importances(storage, experiment.name), out / "figures")
        figures += [importance] if importance else []
    for points, name, title in ((drift_points_eval(experiment, first), "eval", "eval pairs, each trial's scored report"),
                                (drift_points_test(test) if test else None, "test", "test split, top trials")):
        if points is not None and (figure := plots.plot_accuracy_vs_drift(points, out / "figures", name,
                                                                          f"Accuracy vs drift: {title}")):
            figures.append(figure)
    notes = notes_for(experiment, rankings)
    written = report.write(report.Report(f"tuner report: {experiment.name}", experiment, rankings, figures,
                                         notes, test), out, args.top)
    for heading, ranked in rankings.items():
        print(f"{heading}: by {ranked.attrs['metric']} ({ranked.attrs['mode']}, {ranked.attrs['scope']})")
        print(ranking_table(ranked, args.top))
        print(describe_best(ranked))
        if uncertainty := describe_uncertainty(ranked):
            print(uncertainty)
        print()
    for note in notes:
        print(f"note: {note}")
    print(f"trials: {report.counts(experiment)}")
    print(f"report: {written['html']}\n        {written['markdown']}\nfigures: {', '.join(p.name for p in figures)}")
    if test is not None:
        print()
        for line in verdict.closing_lines(test):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
