"""The ranking as a short text table: what tuner.run prints at the end of a search and analysis prints first."""

from __future__ import annotations

import pandas as pd

from tuner.experiment.ranking import ACCURACY_METRIC, PREF_ACCURACY_METRIC


def ranking_columns(ranked: pd.DataFrame) -> list[str]:
    # a searched method is the `method` column already
    configs = [c for c in ranked.columns if c.startswith("config/") and c != "config/method"]
    metric = ranked.attrs.get("metric")
    same_as_score = {ACCURACY_METRIC: "accuracy_at_best", PREF_ACCURACY_METRIC: "pref_accuracy_at_best"}.get(metric)
    extra = [c for c in ("margin_at_best", "guard", "margin/beta", "accuracy_at_best", "pref_accuracy_at_best",
                         "pref_gain")
             if c in ranked and ranked[c].notna().any() and c != same_as_score]
    uncertainty = ["ci_low", "ci_high", "tied"] if "ci_low" in ranked else []
    return ["rank", "trial_id", "method", "status", *configs, "score", *uncertainty, "score_step", *extra]


def display_frame(ranked: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """The ranking's shown columns under the names a reader knows: the metric's own name for the score, its 95%
    interval as one column, and `tied` where a trial's interval overlaps the leader's."""
    shown = ranked.head(top) if top else ranked
    table = shown[ranking_columns(ranked)].rename(columns=lambda c: c.removeprefix("config/"))
    if "ci_low" in table:
        interval = [f"[{low:.2f}, {high:.2f}]" if pd.notna(low) else "-"
                    for low, high in zip(table.pop("ci_low"), table.pop("ci_high"))]
        table.insert(table.columns.get_loc("tied"), "95% CI", interval)
        table["tied"] = ["leader" if position == 0 and pd.notna(rank) else ("tied" if tied else "")
                         for position, (rank, tied) in enumerate(zip(shown["rank"], table["tied"]))]
    return table.rename(columns={"score": ranked.attrs.get("metric", "score"), "score_step": "at step",
                                 "accuracy_at_best": ACCURACY_METRIC, "pref_accuracy_at_best": PREF_ACCURACY_METRIC,
                                 "margin_at_best": "margin"})


def ranking_table(ranked: pd.DataFrame, top: int | None = None) -> str:
    table = display_frame(ranked, top)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        return table.to_string(index=False, na_rep="-")


def describe_best(ranked: pd.DataFrame) -> str:
    if ranked.empty or pd.isna(ranked.iloc[0]["rank"]):
        if "guard" in ranked and ranked["guard"].eq("broken").any():
            return (f"no trial to rank: {int(ranked['guard'].eq('broken').sum())} fell below the base model on a "
                    f"guard group (guard: broken), and none of the others reported a finite value of the metric")
        return "no trial reported a finite value of the metric"
    best = ranked.iloc[0]
    config = {c.removeprefix("config/"): _plain(best[c]) for c in ranked.columns
              if c.startswith("config/") and not _blank(best[c])}  # blank: scoped to another method
    return (f"best trial {best['trial_id']}: {ranked.attrs.get('metric')} = {best['score']:.4g} "
            f"({ranked.attrs.get('scope')} over its reports, at step {best['score_step']:.0f}), "
            + (f"config {config}" if config else "the spec's own settings (nothing searched)"))


def describe_uncertainty(ranked: pd.DataFrame) -> str | None:
    """How sure the ranking is: trials tied with the leader, and the eval pairs it would take to separate the top
    two at their observed gap; None when the ranking metric has no interval."""
    if "tied" not in ranked or ranked["rank"].notna().sum() < 2:  # one trial is tied with nothing
        return None
    tied = int(ranked["tied"].sum())
    pairs = ranked.attrs.get("pairs")
    line = (f"{tied} trial(s) tied with the leader: their 95% intervals overlap its interval on {pairs} eval pairs"
            if tied else f"no trial's 95% interval overlaps the leader's on {pairs} eval pairs")
    needed = ranked.attrs.get("pairs_to_separate")
    if needed is not None:
        scores = ranked.loc[ranked["rank"].notna(), "score"].astype(float)
        gap = 100 * abs(scores.iloc[0] - scores.iloc[1])
        margins = ranked.loc[ranked["rank"].notna()].get("margin_at_best")
        tie_break = (f" (the leader's larger eval_pref_margin, {margins.iloc[0]:.3f} vs {margins.iloc[1]:.3f}, breaks "
                     f"the tie)" if margins is not None and margins.iloc[:2].notna().all()
                     and margins.iloc[0] != margins.iloc[1] else "")
        line += (f"; the top two score the same, so no number of eval pairs separates them{tie_break}"
                 if needed == float("inf")
                 else f"; separating the top two at their gap of {gap:.1f} points would take about {needed:,.0f} "
                      f"eval pairs (two-sided 5% test, 80% power)")
    return line


def describe_repeats(ranked: pd.DataFrame, seed_column: str = "config/train.seed", shown: int = 5) -> list[str]:
    """The noise floor, where trials repeat the same settings over training seeds (tuner.search.space.planned_trials):
    per setting, the spread of the ranking's score over its seeds. A gap between settings smaller than that spread
    is what training's own noise gives."""
    if seed_column not in ranked or ranked.empty:
        return []
    settings = [c for c in ranked.columns if c.startswith("config/") and c != seed_column]
    keyed = ranked.assign(_settings=ranked[settings].astype(str).agg(" ".join, axis=1) if settings else "")
    lines = []
    for _, trials in keyed.groupby("_settings", sort=False):
        if len(trials) < 2:
            continue
        scores = trials.loc[trials["rank"].notna(), "score"].astype(float)
        config = {c.removeprefix("config/"): _plain(trials.iloc[0][c]) for c in settings if not _blank(trials.iloc[0][c])}
        of = f"{len(trials)} seeds" + (f" of {config}" if config else "")
        unranked = len(trials) - len(scores)
        why = (f"; {unranked} unranked (guard broken or no finite score)" if unranked else "")
        if len(scores) >= 2:
            lines.append(f"  {of}: {scores.min():.4g} to {scores.max():.4g} (mean {scores.mean():.4g}, sd "
                         f"{scores.std(ddof=1):.2g}){why}")
        else:
            lines.append(f"  {of}: too few ranked to give a spread{why}")
    if not lines:
        return []
    metric = ranked.attrs.get("metric", "score")
    head = (f"noise floor: the same settings over training seeds, {metric} per seed (a gap between settings smaller "
            f"than this spread is training noise):")
    return [head, *lines[:shown]] + ([f"  ... and {len(lines) - shown} more settings"] if len(lines) > shown else [])


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _plain(value):
    return value.item() if hasattr(value, "item") else value
