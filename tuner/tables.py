"""The ranking as a short text table: what tuner.run prints at the end of a search and analysis prints first."""

from __future__ import annotations

import pandas as pd

from tuner.ranking import ACCURACY_METRIC, PREF_ACCURACY_METRIC


def ranking_columns(ranked: pd.DataFrame) -> list[str]:
    configs = [c for c in ranked.columns if c.startswith("config/")]
    metric = ranked.attrs.get("metric")
    same_as_score = {ACCURACY_METRIC: "accuracy_at_best", PREF_ACCURACY_METRIC: "pref_accuracy_at_best"}.get(metric)
    extra = [c for c in ("margin/beta", "accuracy_at_best", "pref_accuracy_at_best", "pref_gain")
             if c in ranked and ranked[c].notna().any() and c != same_as_score]
    return ["rank", "trial_id", "method", "status", *configs, "score", "score_step", *extra]


def display_frame(ranked: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """The ranking's shown columns under the names a reader knows: the metric's own name for the score."""
    shown = ranked.head(top) if top else ranked
    table = shown[ranking_columns(ranked)].rename(columns=lambda c: c.removeprefix("config/"))
    return table.rename(columns={"score": ranked.attrs.get("metric", "score"), "score_step": "at step",
                                 "accuracy_at_best": ACCURACY_METRIC, "pref_accuracy_at_best": PREF_ACCURACY_METRIC})


def ranking_table(ranked: pd.DataFrame, top: int | None = None) -> str:
    table = display_frame(ranked, top)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        return table.to_string(index=False, na_rep="-")


def describe_best(ranked: pd.DataFrame) -> str:
    if ranked.empty or pd.isna(ranked.iloc[0]["rank"]):
        return "no trial reported a finite value of the metric"
    best = ranked.iloc[0]
    config = {c.removeprefix("config/"): _plain(best[c]) for c in ranked.columns if c.startswith("config/")}
    return (f"best trial {best['trial_id']}: {ranked.attrs.get('metric')} = {best['score']:.4g} "
            f"({ranked.attrs.get('scope')} over its reports, at step {best['score_step']:.0f}), config {config}")


def _plain(value):
    return value.item() if hasattr(value, "item") else value
