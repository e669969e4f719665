"""What the test split says about the winner, from per-pair scores: each model's accuracy with its interval, the
paired difference from the base model, accuracy per group, the pairs that regressed (and those that improved),
and how far each adapter moved from the base model. Pure: tuner.trial.evaluation does the scoring and the file.

With guard groups (search.guard_groups), the headline's accuracy and difference cover the other groups (what the
search optimised), and each guard group is reported apart: held, or WORSE than the base model by the rule the
search applied to every eval round (tuner.evidence.quality.guard_broken). A winner that is not better than the base
model ends with what to change so that the next search can find something.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tuner.evidence import stats
from tuner.evidence.quality import guard_broken


@dataclass
class Scored:
    """One model's mean per-token log-likelihoods of each test pair's chosen and rejected answer (NaN where a pair
    was not scored: its answer was truncated away)."""

    label: str  # "base model" or the trial id
    chosen: np.ndarray
    rejected: np.ndarray
    trial_id: str | None = None
    method: str | None = None
    step: int | None = None
    checkpoint: str | None = None
    settings: dict | None = None  # the baseline's: its searched keys' values (search.baseline)

    @property
    def scored(self) -> np.ndarray:
        return np.isfinite(self.chosen) & np.isfinite(self.rejected)

    @property
    def correct(self) -> np.ndarray:
        return (self.chosen > self.rejected) & self.scored


@dataclass
class ScoredSplit:
    pairs: pd.DataFrame  # one row per test pair: pair_id, prompt, chosen, rejected and, with groups, group
    base: Scored
    trials: list[Scored]  # by the search's ranking; trials[0] is the winner
    group_name: str | None = None  # data.group_column's name, for headings
    guard_groups: tuple = ()  # search.guard_groups: reported apart, left out of the headline's accuracy
    # Where the winner's learning rate is set, the key the advice names: its searched key (train.learning_rate, or
    # scoped to the winner's method: dpo.train.learning_rate), or None: train.learning_rate.
    learning_rate_key: str | None = "train.learning_rate"
    # The trial at the user's own settings (search.baseline), scored beside the winner; never among `trials`.
    baseline: Scored | None = None
    # A search across methods: each method's best trial (by the search's ranking among that method's trials), among
    # `trials`, by method name.
    method_bests: dict[str, Scored] = field(default_factory=dict)

    def learning_rate(self, direction: str) -> str:
        """`lower`/`raise` the learning rate, naming the key that sets it in this search."""
        return (f"{direction} the learning-rate range (search.space.{self.learning_rate_key})"
                if self.learning_rate_key else f"{direction} train.learning_rate")

    @property
    def winner(self) -> Scored | None:
        return self.trials[0] if self.trials else None

    @property
    def mask(self) -> np.ndarray:
        """Pairs every model scored (the same tokenization gives the same mask; this guards the comparison)."""
        mask = self.base.scored.copy()
        for trial in self.scored_models[1:]:
            mask &= trial.scored
        return mask

    @property
    def scored_models(self) -> list[Scored]:
        """The base model, the ranked trials and the baseline: every model scored on the test pairs."""
        return [self.base, *self.trials, *([self.baseline] if self.baseline is not None else [])]

    def in_groups(self, names) -> np.ndarray:
        groups = self.pairs["group"].astype(str).to_numpy() if "group" in self.pairs else None
        return np.isin(groups, list(names)) if groups is not None else np.zeros(len(self.pairs), dtype=bool)

    @property
    def selected(self) -> np.ndarray:
        """The pairs the headline covers: every scored pair outside the guard groups."""
        return self.mask & ~self.in_groups(self.guard_groups)

    def outcomes(self, scored: Scored, members: np.ndarray | None = None) -> np.ndarray:
        return scored.correct[self.selected if members is None else members].astype(int)

    def accuracy(self, scored: Scored) -> stats.Estimate:
        return stats.accuracy(self.outcomes(scored))

    def difference(self, scored: Scored, members: np.ndarray | None = None,
                   against: Scored | None = None) -> stats.PairedDifference:
        """`scored` minus `against` (default: the base model) on `members` (default: the selected pairs),
        resampling prompts."""
        members = self.selected if members is None else members
        prompts = self.pairs["prompt"].astype(str).to_numpy()[members]
        return stats.paired_difference(self.outcomes(scored, members), self.outcomes(against or self.base, members),
                                       clusters=prompts)

    def guards(self, scored: Scored) -> dict[str, tuple[stats.PairedDifference, bool]]:
        """Per guard group with scored pairs: `scored` minus the base model there, and whether the guard broke."""
        result = {}
        for group in self.guard_groups:
            members = self.mask & self.in_groups([group])
            if members.any():
                result[group] = (self.difference(scored, members),
                                 guard_broken(list((scored.chosen - scored.rejected)[members]),
                                              list((self.base.chosen - self.base.rejected)[members])))
        return result

    def drift(self, scored: Scored) -> float:
        """Mean over the test answers (chosen and rejected) of the per-token log-ratio of the model to the base
        model: how far the adapter moved on this data (0 for the base model; negative when it made the answers
        less likely)."""
        mask = self.mask
        ratios = np.concatenate([(scored.chosen - self.base.chosen)[mask], (scored.rejected - self.base.rejected)[mask]])
        return float(np.mean(ratios)) if ratios.size else math.nan


ALL_PAIRS = "(all)"


def group_table(results: ScoredSplit) -> pd.DataFrame:
    """Accuracy per group, then over all pairs, for the base model and each scored trial."""
    mask = results.mask
    groups = results.pairs["group"].astype(str).to_numpy() if "group" in results.pairs else None
    names = sorted(set(groups[mask])) if groups is not None else []
    rows = []
    for name in [*names, ALL_PAIRS]:
        members = mask & (groups == name) if name in names else mask
        row = {results.group_name or "group": name, "pairs": int(members.sum())}
        for scored in results.scored_models:
            row[scored.label] = float(scored.correct[members].mean()) if members.any() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def changed_pairs(results: ScoredSplit, scored: Scored | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(regressed, improved): test pairs the base model got right and `scored` (default: the winner) gets wrong,
    and the reverse, with the pair's text and both models' log-likelihood margins (chosen minus rejected)."""
    scored = scored or results.winner
    mask = results.mask
    base_right, right = results.base.correct & mask, scored.correct & mask
    columns = [c for c in ("pair_id", "group", "prompt", "chosen", "rejected") if c in results.pairs]
    frame = results.pairs[columns].copy()
    frame["base margin"] = results.base.chosen - results.base.rejected
    frame[f"{scored.label} margin"] = scored.chosen - scored.rejected
    return frame[base_right & ~right].reset_index(drop=True), frame[~base_right & right].reset_index(drop=True)


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def headline(results: ScoredSplit) -> list[str]:
    """The last lines of a search: the winner's test accuracy, the base model's, and the paired difference, each
    with its 95% interval, and a plain verdict."""
    winner, base = results.winner, results.base
    mask = results.mask
    prompts = results.pairs["prompt"].astype(str)[mask].nunique()
    lines = [f"Test split: {int(mask.sum())} pairs on {prompts} prompts that no trial trained on and no search "
             f"step (ASHA, Optuna, ranking) saw; 95% intervals"]
    if results.guard_groups:
        lines.append(f"  searched on the {int(results.selected.sum())} pairs outside the guard groups "
                     f"({', '.join(results.guard_groups)}), which are reported apart")
    b = results.accuracy(base)
    if winner is None:
        nothing = ("none reported a finite score" if not results.guard_groups else
                   "none reported a finite score on a report that held every guard group")
        lines += [f"  base model: preference accuracy {b.value:.3f} [{b.low:.3f}, {b.high:.3f}]",
                  f"  no trial to compare: {nothing}"]
        if results.guard_groups:
            lines.append("the search found nothing better than the base model: every trial that reported fell below it "
                         f"on a guard group. {results.learning_rate('Lower')} or train fewer steps "
                         f"(train.max_steps)")
        return lines
    w, d = results.accuracy(winner), results.difference(winner)
    where = f" ({winner.method}, step {winner.step})" if winner.method else ""
    lines += [f"  winner {winner.label}{where}: preference accuracy {w.value:.3f} [{w.low:.3f}, {w.high:.3f}]",
              f"  base model: preference accuracy {b.value:.3f} [{b.low:.3f}, {b.high:.3f}]",
              f"  difference: {_points(d.estimate.value)} points [{_points(d.estimate.low)}, "
              f"{_points(d.estimate.high)}] (paired bootstrap over {d.clusters} prompts; {d.a_only} pairs fixed, "
              f"{d.b_only} broken; exact McNemar p = {d.p_value:.2g})"]
    guards = results.guards(winner)
    for group, (g, broken) in guards.items():
        members = results.mask & results.in_groups([group])
        w_acc, b_acc = results.outcomes(winner, members).mean(), results.outcomes(base, members).mean()
        lines.append(f"  guard {group}: winner {w_acc:.3f}, base model {b_acc:.3f}, {_points(g.estimate.value)} "
                     f"points [{_points(g.estimate.low)}, {_points(g.estimate.high)}] ({g.a_only} fixed, "
                     f"{g.b_only} broken): {'WORSE' if broken else 'held'}")
    worse = [group for group, (_, broken) in guards.items() if broken]
    if not d.distinguishable:
        lines.append("  verdict: the winner is not distinguishable from the base model on the test split")
    elif d.estimate.value > 0:
        held = (f"; but WORSE on guard group(s) {', '.join(worse)}" if worse else
                "; every guard group held" if guards else "")
        lines.append(f"  verdict: the winner is better than the base model on the test split, by "
                     f"{100 * d.estimate.low:.1f} to {100 * d.estimate.high:.1f} points{held}")
    else:
        lines.append(f"  verdict: the winner is WORSE than the base model on the test split, by "
                     f"{-100 * d.estimate.high:.1f} to {-100 * d.estimate.low:.1f} points")
    return lines + by_method(results) + against_baseline(results)


def by_method(results: ScoredSplit) -> list[str]:
    """A search across methods: each method's best on the test split, its accuracy and its paired difference from
    the base model with intervals, its guards, and which method won: which objective, at which settings, by how
    much, and whether the difference is real."""
    if len(results.method_bests) < 2:
        return []
    lines = ["  each method's best on the test split (searched groups; difference from the base model, paired):"]
    for method, scored in sorted(results.method_bests.items(),
                                 key=lambda item: -results.accuracy(item[1]).value):
        a, d = results.accuracy(scored), results.difference(scored)
        worse = [group for group, (_, broken) in results.guards(scored).items() if broken]
        guards = (f"; WORSE on guard group(s) {', '.join(worse)}" if worse else
                  "; guards held" if results.guard_groups else "")
        won = " (the winner)" if scored is results.winner else ""
        lines.append(f"    {method:<5} {scored.label}{won}: {a.value:.3f} [{a.low:.3f}, {a.high:.3f}], "
                     f"{_points(d.estimate.value)} points [{_points(d.estimate.low)}, {_points(d.estimate.high)}]"
                     f"{guards}")
    winner = results.winner
    others = [s for s in results.method_bests.values() if s is not winner]
    if winner is not None and winner.method in results.method_bests and others:
        runner_up = max(others, key=lambda s: results.accuracy(s).value)
        d = results.difference(winner, against=runner_up)
        real = "a real difference" if d.distinguishable else "not distinguishable on these pairs"
        lines.append(f"  {winner.method} won; against the best {runner_up.method}: {_points(d.estimate.value)} points "
                     f"[{_points(d.estimate.low)}, {_points(d.estimate.high)}] (paired over {d.clusters} prompts): "
                     f"{real}")
    return lines


def _settings_text(settings: dict) -> str:
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in settings.items())


def against_baseline(results: ScoredSplit) -> list[str]:
    """Where the winner stands against the user's own settings (search.baseline), on the same test pairs: the
    baseline's accuracy, the paired difference, and what the search gained over it."""
    baseline, winner = results.baseline, results.winner
    if baseline is None or winner is None:
        return []
    a, d = results.accuracy(baseline), results.difference(winner, against=baseline)
    worse = [group for group, (_, broken) in results.guards(baseline).items() if broken]
    guards = (f"; WORSE than the base model on guard group(s) {', '.join(worse)}" if worse else
              "; every guard group held" if results.guard_groups else "")
    lines = [f"  your baseline {baseline.trial_id} ({_settings_text(baseline.settings or {})}, search.baseline): "
             f"preference accuracy {a.value:.3f} [{a.low:.3f}, {a.high:.3f}]{guards}",
             f"  winner minus your baseline: {_points(d.estimate.value)} points [{_points(d.estimate.low)}, "
             f"{_points(d.estimate.high)}] (paired bootstrap over {d.clusters} prompts; {d.a_only} pairs fixed, "
             f"{d.b_only} broken; exact McNemar p = {d.p_value:.2g})"]
    if not d.distinguishable:
        lines.append("  against your baseline: the search's winner is not distinguishable from your own settings on "
                     "the test split")
    elif d.estimate.value > 0:
        lines.append(f"  against your baseline: the search gained {100 * d.estimate.low:.1f} to "
                     f"{100 * d.estimate.high:.1f} points over your own settings on the test split")
    else:
        lines.append(f"  against your baseline: the search's winner is WORSE than your own settings on the test "
                     f"split, by {-100 * d.estimate.high:.1f} to {-100 * d.estimate.low:.1f} points")
    return lines


def found_something(results: ScoredSplit) -> bool:
    """Whether the winner is better than the base model on the test split with every guard group held."""
    if results.winner is None:
        return False
    d = results.difference(results.winner)
    return (d.distinguishable and d.estimate.value > 0
            and not any(broken for _, broken in results.guards(results.winner).values()))


def closing_lines(results: ScoredSplit) -> list[str]:
    """What tuner.run prints when a search ends: the per-group table, the drift, the regressions, and the headline
    last."""
    table = group_table(results)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        baseline = ", and your baseline" if results.baseline is not None else ""
        lines = [f"Test preference accuracy per {results.group_name or 'group'} (base model and the top "
                 f"{len(results.trials)} trial(s) by the search metric{baseline}):",
                 table.to_string(index=False, na_rep="-")]
    if results.trials:
        lines.append("drift from the base model on the test answers (mean per-token log-ratio): " +
                     ", ".join(f"{t.label} {results.drift(t):+.3f}" for t in results.trials))
        regressed, improved = changed_pairs(results)
        lines.append(f"regressions: {len(regressed)} test pair(s) the base model gets right and the winner gets "
                     f"wrong; {len(improved)} the reverse (python -m analysis lists them)")
    lines += [""] + headline(results)
    return lines + (what_to_change(results) if results.trials and not found_something(results) else [])


# Drift (mean per-token log-ratio to the base model on the test answers) below which an adapter barely moved.
BARELY_MOVED = 0.05


def what_to_change(results: ScoredSplit) -> list[str]:
    """When the search found nothing (the winner is not better than the base model, or broke a guard): say so,
    and what to change, from what the test split shows of the winner."""
    winner = results.winner
    d, drift = results.difference(winner), results.drift(winner)
    worse = [group for group, (_, broken) in results.guards(winner).items() if broken]
    lines = ["the search found nothing better than the base model: the winner above is the best of what was tried, "
             "not an improvement"]
    if worse:
        lines.append(f"  it moved too far: guard group(s) {', '.join(worse)} got worse. "
                     f"{results.learning_rate('Lower')} or train fewer steps (train.max_steps)"
                     + (", or raise train.beta (DPO's pull towards the reference)" if winner.method in ("dpo", "ipo") else ""))
    elif abs(drift) < BARELY_MOVED:
        lines.append(f"  the adapters barely moved (drift {drift:+.3f} nats a token): train longer "
                     f"(train.max_steps) or {results.learning_rate('raise')}")
    elif not d.distinguishable:
        lines.append(f"  the winner moved (drift {drift:+.3f}) but changed too few test pairs to tell "
                     f"({d.a_only} fixed, {d.b_only} broken): score more pairs (data.max_eval_rows, "
                     f"data.max_test_rows, or a larger data.test_fraction), or train longer (train.max_steps)")
    else:
        lines.append("  training made the searched groups worse: check that `chosen` holds the preferred answer "
                     f"(data.columns), and {results.learning_rate('lower')}")
    return lines
