"""The end of a search's console: the ranking with its uncertainty, errored trials and the best checkpoint, then the
top trials and the base model scored once on the test split, with the verdict."""

from __future__ import annotations

import shlex

from tuner.console import TRIAL_LOG
from tuner.experiment.folder import Experiment


def report_test_split(experiment: Experiment) -> None:
    """The last lines of a finished search: the top trials and the base model scored once on the test split, per
    group, the regressions, and the headline."""
    from tuner.evidence import scoring, verdict

    results = scoring.score_test_split(experiment)
    if results is None:
        why = ("search.test_top_k is 0" if experiment.has_test_split else
               "the experiment has no test split (data.test_fraction is 0)")
        print(f"\ntest split: not scored ({why}); the numbers above are the eval pairs the search selected on")
        return
    print()
    for line in verdict.closing_lines(results):
        print(line)


def report(experiment: Experiment, top: int) -> None:
    """The end of a search: the ranking, errored trials and the best checkpoint, all from experiment.best()'s
    ranking, so that the table's numbers, the named trial and the checkpoint are one report's. A search in which
    no trial reported (all failed, or stopped before the first evaluation) shows its trials and their errors."""
    from tuner.experiment.ranking import UnknownMetric
    from tuner.experiment.tables import describe_best, describe_repeats, describe_uncertainty, ranking_table

    spec, path, trials = experiment.spec, shlex.quote(experiment.uri), experiment.trials
    try:
        ranked = experiment.ranking()
    except UnknownMetric:  # no trial reported it: every trial failed, or the search stopped before an evaluation
        ranked = None
    if ranked is not None:
        print(f"\nTop trials by {spec.metric} ({spec.search.mode}):")
        print(ranking_table(ranked, top))
        print(describe_best(ranked))
        if uncertainty := describe_uncertainty(ranked):
            print(uncertainty)
        for line in describe_repeats(ranked):
            print(line)
        if (baseline := experiment.best(baseline=True)) is not None:
            print(f"baseline trial {baseline.trial_id} (search.baseline; not ranked): {baseline.metric} "
                  f"{baseline.score:.4g} at step {baseline.step}")
    elif len(trials):
        counts = ", ".join(f"{n} {status}" for status, n in trials["status"].value_counts().items())
        print(f"\nNo trial reported {spec.metric}: {len(trials)} trial(s), {counts}")
    else:
        print(f"\nNo trial reported {spec.metric}: no trial started")
    for _, trial in (trials[trials["status"] == "errored"].iterrows() if len(trials) else []):
        print(f"errored trial {trial['trial_id']}: {trial['error']} (log: {trial['path']}/{TRIAL_LOG})")
    best = experiment.best() if ranked is not None else None
    if best is not None:
        print(f"best checkpoint (LoRA adapter + tokenizer): {best.checkpoint or 'none kept'}")
    print(f"results: {path}")
    if ranked is not None:
        print(f"report: python -m analysis {path}\nexport: python -m tuner.export {path} --out DIR")
