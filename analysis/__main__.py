"""`python -m analysis RESULTS_DIR [--metric M] [--mode max|min] [--top K] [--scope best|last] [--out DIR]`:
rank the trials of a tuner experiment (finished, interrupted or still running), draw their curves and write
report.md, report.html and ranking CSVs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import plots, report
from tuner.errors import guarded
from tuner.experiment import Experiment
from tuner.ranking import MARGIN_METRIC, rankings_for
from tuner.tables import describe_best, ranking_table
from tuner.trust import TRUST_HINT, owner_only_files


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", help="an experiment: run.storage_path/NAME, a folder or an s3:// (gs://) URI")
    parser.add_argument("--metric", help="rank on this reported metric (default: the spec's, or per method)")
    parser.add_argument("--mode", choices=["max", "min"], help="default: the spec's search.mode, else max")
    parser.add_argument("--scope", choices=["best", "last"], default="best",
                        help="a trial's best report or its last one (default best)")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--out", type=Path, help="report folder (default RESULTS_DIR/report)")
    parser.add_argument(TRUST_HINT, action="store_true",
                        help="read a results folder that another user owns or can write to")
    return parser.parse_args(argv)


def build_rankings(experiment: Experiment, metric, mode, scope):
    search = experiment.spec.search
    return rankings_for(experiment.trials, experiment.history, metric or search.metric, mode or search.mode, scope,
                        experiment.base)


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
    rankings = build_rankings(experiment, args.metric, args.mode, args.scope)
    out = args.out or experiment.report_dir
    first = next(iter(rankings.values()))
    best = first.iloc[0]["trial_id"] if len(first) and first.iloc[0]["rank"] == 1 else None
    figures = plots.plot_curves(experiment.history, best, out / "figures")
    figures += plots.plot_parameters(first, out / "figures")
    if experiment.spec.search.algorithm == "optuna" and experiment.has_study:
        from tuner import study

        storage = study.storage_for(experiment.spec.search.storage, experiment.uri)
        importance = plots.plot_importances(plots.optuna_importances(storage, experiment.name), out / "figures")
        figures += [importance] if importance else []
    notes = notes_for(experiment, rankings)
    written = report.write(report.Report(f"tuner report: {experiment.name}", experiment, rankings, figures,
                                         notes), out, args.top)
    for heading, ranked in rankings.items():
        print(f"{heading}: by {ranked.attrs['metric']} ({ranked.attrs['mode']}, {ranked.attrs['scope']})")
        print(ranking_table(ranked, args.top))
        print(describe_best(ranked), end="\n\n")
    for note in notes:
        print(f"note: {note}")
    print(f"trials: {report.counts(experiment)}")
    print(f"report: {written['html']}\n        {written['markdown']}\nfigures: {', '.join(p.name for p in figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
