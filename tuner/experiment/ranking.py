"""Ranking trials: pure functions over the `trials` and `history` DataFrames of tuner.experiment.results (no Ray
needed).

A trial's score is its best report of the metric (scope "best", what ResultGrid.get_best_result calls "all") or
its last one (scope "last"). Where the history says which reports still have their checkpoint (`checkpoint_path`),
only those count, so that a ranking row always describes an adapter that can be exported: the row's step, its
numbers and its checkpoint are one report's. NaN and infinite values never count; a trial with no finite value,
and a trial that ended in an error (its run did not complete), are listed unranked. Ties go to the earlier report
within a trial, and across trials to the trial that reached the score in fewer steps, then to the smaller trial id,
so a ranking is the same on every run. On preference accuracy, ties are first broken by evidence: the larger
eval_pref_margin (the same preference, measured continuously, on the same pairs) of the tied reports.

With guard groups (search.guard_groups), a report whose trial is clearly worse than the base model on a guard group
(`eval_guard_broken` > 0) never counts: a trial is scored on its best report that holds every guard, and a trial
with none is listed unranked with `guard` = "broken", so it never wins.

A ranking on a share of eval pairs (preference accuracy) also carries each trial's 95% interval and marks the
trials whose interval overlaps the leader's as tied with it (`add_intervals`): a one-pair difference on 24 pairs is
4 points, and the ranking should not pretend to know more than its eval pairs can say.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuner.errors import UserError
from tuner.evidence import stats
from tuner.evidence.quality import GUARD_BROKEN, OUTCOMES_FILE, MARGIN as MARGIN_TIE_BREAK  # the margin breaks ties
from tuner.trial.methods import DEFAULT_METRIC  # one definition of what each method is ranked on

SHARED_METRIC = "eval_loss"  # reported by both methods, though on each method's own loss scale
MARGIN_METRIC = "eval_rewards/margins"
ACCURACY_METRIC = "eval_rewards/accuracies"
PREF_ACCURACY_METRIC = "eval_pref_accuracy"  # shared by every method and the base model
DRIFT_METRIC = "eval_drift"  # mean per-token log-ratio of policy to reference on the eval answers
DRIFT_PENALISED = "pref_accuracy_drift_penalised"  # eval_pref_accuracy - lambda x |eval_drift|


CHECKPOINT_COLUMN = "checkpoint_path"  # per report: the folder of its checkpoint while it is kept, else NaN


class UnknownMetric(UserError):
    """The metric asked for was never reported."""


def available_metrics(history: pd.DataFrame) -> list[str]:
    ignored = {"trial_id", "timestamp", "date", "hostname", "node_ip", "pid", "time_this_iter_s", "done",
               "time_total_s", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name",
               "should_checkpoint", "setup/started_at", CHECKPOINT_COLUMN}
    return sorted(c for c in history.columns
                  if c not in ignored and not c.startswith("config/") and pd.api.types.is_numeric_dtype(history[c]))


def summarize(history: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Per trial: best and last finite value of `metric`, and the step at which each was reported."""
    if metric not in history.columns:
        raise UnknownMetric(f"metric {metric!r} was not reported; reported metrics: "
                            f"{', '.join(available_metrics(history)) or '(none)'}")
    rows = []
    order = [c for c in ("training_iteration", "step") if c in history]
    guarded = GUARD_BROKEN in history
    for trial_id, reports in history.groupby("trial_id", sort=True):
        reports = reports.sort_values(order, kind="mergesort") if order else reports
        values = pd.to_numeric(reports[metric], errors="coerce")
        finite = reports[np.isfinite(values)]
        if CHECKPOINT_COLUMN in finite and finite[CHECKPOINT_COLUMN].notna().any():
            finite = finite[finite[CHECKPOINT_COLUMN].notna()]  # only reports whose adapter is still kept
        row = {"trial_id": trial_id, "best": math.nan, "best_step": math.nan, "last": math.nan, "last_step": math.nan}
        if guarded:
            holds = ~(pd.to_numeric(finite[GUARD_BROKEN], errors="coerce").fillna(0) > 0)
            row["guard"] = ("held" if holds.all() else "broken" if not holds.any() else "held (some reports)")
            finite = finite[holds]
        steps = finite["step"] if "step" in finite else finite["training_iteration"]
        if not finite.empty:
            finite_values = pd.to_numeric(finite[metric])
            signed = -finite_values.to_numpy() if mode == "max" else finite_values.to_numpy()
            margin = (-pd.to_numeric(finite[MARGIN_TIE_BREAK], errors="coerce").fillna(-np.inf).to_numpy()
                      if metric == PREF_ACCURACY_METRIC and MARGIN_TIE_BREAK in finite else np.zeros(len(finite)))
            # lexsort's last key sorts first; on a full tie the earlier report (fewer steps) stands
            best_position = int(np.lexsort((np.arange(len(finite)), margin, signed))[0])
            row.update(best=float(finite_values.iloc[best_position]), best_step=float(steps.iloc[best_position]),
                       last=float(finite_values.iloc[-1]), last_step=float(steps.iloc[-1]),
                       best_report=finite.index[best_position], last_report=finite.index[-1])
            if MARGIN_TIE_BREAK in finite:
                row["margin_at_best"] = float(pd.to_numeric(finite[MARGIN_TIE_BREAK]).iloc[best_position])
            if ACCURACY_METRIC in finite:
                row["accuracy_at_best"] = float(finite[ACCURACY_METRIC].iloc[best_position])
            if PREF_ACCURACY_METRIC in finite:
                row["pref_accuracy_at_best"] = float(finite[PREF_ACCURACY_METRIC].iloc[best_position])
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["trial_id", "best", "best_step", "last", "last_step"])


def rank_trials(trials: pd.DataFrame, history: pd.DataFrame, metric: str, mode: str = "max",
                scope: str = "best", base: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per trial, best first, with `rank` (1-based; NaN for trials with no finite score) and `score`.

    `base` holds the base model's metrics; with its eval_pref_accuracy, `pref_gain` is each trial's held-out
    preference accuracy (at its scored report) minus the base model's."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got {mode!r}")
    if scope not in ("best", "last"):
        raise ValueError(f"scope must be best or last, got {scope!r}")
    summary = summarize(history, metric, mode)
    ranked = trials.merge(summary, on="trial_id", how="left")
    for column in ("best", "best_step", "last", "last_step"):
        if column not in ranked:
            ranked[column] = math.nan
    ranked["score"] = ranked[scope]
    ranked["score_step"] = ranked[f"{scope}_step"]
    # The history row of the scored report: its metrics and its checkpoint are what the row stands for.
    ranked["report"] = ranked[f"{scope}_report"] if f"{scope}_report" in ranked else math.nan
    if metric == MARGIN_METRIC and "beta" in ranked:
        # DPO's implicit reward is beta * log-ratio, so raw margins grow with beta; this compares log-ratios.
        ranked["margin/beta"] = ranked["score"] / ranked["beta"]
    if base and PREF_ACCURACY_METRIC in base and "pref_accuracy_at_best" in ranked:
        ranked["pref_gain"] = ranked["pref_accuracy_at_best"] - base[PREF_ACCURACY_METRIC]
    errored = ranked["status"].eq("errored") if "status" in ranked else False
    has_score = ranked["score"].notna() & ~errored
    signed = ranked["score"] if mode == "min" else -ranked["score"]
    tie_break = (-ranked["margin_at_best"].fillna(-np.inf)
                 if metric == PREF_ACCURACY_METRIC and "margin_at_best" in ranked else 0.0)
    ranked = ranked.assign(_missing=~has_score, _signed=signed, _tie_break=tie_break).sort_values(
        ["_missing", "_signed", "_tie_break", "score_step", "trial_id"], kind="mergesort", na_position="last"
    ).reset_index(drop=True)
    ranked["rank"] = np.where(~ranked["_missing"], np.arange(1, len(ranked) + 1), np.nan)
    ranked = ranked.drop(columns=["_missing", "_signed", "_tie_break"])
    ranked.attrs.update(metric=metric, mode=mode, scope=scope)
    return ranked


def rank_by_method(trials: pd.DataFrame, history: pd.DataFrame, mode: str = "max",
                   scope: str = "best", base: dict[str, float] | None = None) -> dict[str, pd.DataFrame]:
    """Each method on its own default metric and, when the folder holds several methods, all on eval_loss (min)."""
    rankings = {}
    methods = sorted(trials["method"].dropna().unique()) if "method" in trials else []
    for method in methods:
        of_method = trials[trials["method"] == method]
        rankings[method] = rank_trials(of_method, history[history["trial_id"].isin(of_method["trial_id"])],
                                       DEFAULT_METRIC[method], mode, scope, base)
    if len(methods) > 1:
        shared, shared_mode = ((PREF_ACCURACY_METRIC, "max") if PREF_ACCURACY_METRIC in history
                               else (SHARED_METRIC, "min"))
        rankings["all"] = rank_trials(trials, history, shared, shared_mode, scope, base)
    return rankings


def rankings_for(trials: pd.DataFrame, history: pd.DataFrame, metric: str | None = None, mode: str = "max",
                 scope: str = "best", base: dict[str, float] | None = None) -> dict[str, pd.DataFrame]:
    """What a report shows. With a search metric: all trials on it first, then each method on its own default
    metric where that differs. Without one: each method on its default, and all together when there are several."""
    if not metric:
        return rank_by_method(trials, history, mode, scope, base)
    rankings = {"all": rank_trials(trials, history, metric, mode, scope, base)}
    for method, ranked in rank_by_method(trials, history, "max", scope, base).items():
        if method != "all" and ranked.attrs["metric"] != metric:
            rankings[method] = ranked
    return rankings


SHARE_METRICS = (PREF_ACCURACY_METRIC, ACCURACY_METRIC)  # a share of eval pairs right: a binomial interval applies


def add_intervals(ranked: pd.DataFrame, pairs: int | None,
                  outcomes: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """`ci_low`/`ci_high` (95% Wilson interval) per ranked trial and `tied` (its interval overlaps the leader's), when
    the ranking metric is a share of eval pairs. A trial's interval comes from its per-pair `outcomes` when given,
    else from its score and the number of eval `pairs`. `attrs["pairs"]` holds the number of eval pairs and
    `attrs["pairs_to_separate"]` how many it would take to tell the top two apart at their observed gap."""
    outcomes = outcomes or {}
    if ranked.attrs.get("metric") not in SHARE_METRICS or not (pairs or outcomes) or ranked.empty:
        return ranked
    ranked = ranked.copy()
    intervals = []
    for _, row in ranked.iterrows():
        if pd.isna(row["rank"]) or not np.isfinite(row["score"]):
            intervals.append(None)
        elif row["trial_id"] in outcomes:
            intervals.append(stats.accuracy(outcomes[row["trial_id"]]))
        else:
            intervals.append(stats.wilson(round(float(row["score"]) * pairs), pairs))
    ranked["ci_low"] = [i.low if i else math.nan for i in intervals]
    ranked["ci_high"] = [i.high if i else math.nan for i in intervals]
    leader = intervals[0] if intervals and ranked.iloc[0]["rank"] == 1 else None
    ranked["tied"] = [bool(leader and i and position > 0 and i.overlaps(leader)) for position, i in
                      enumerate(intervals)]
    counts = {len(v) for v in outcomes.values()}
    ranked.attrs["pairs"] = counts.pop() if len(counts) == 1 and not pairs else pairs
    scores = ranked.loc[ranked["rank"].notna(), "score"].astype(float).tolist()
    ranked.attrs["pairs_to_separate"] = stats.pairs_to_separate(scores[0], scores[1]) if len(scores) > 1 else None
    return ranked


def with_drift_penalty(history: pd.DataFrame, penalty: float) -> pd.DataFrame:
    """The history with `DRIFT_PENALISED` per report: preference accuracy minus `penalty` x |drift|, so that a
    ranking can prefer accuracy the policy reached without moving far from its reference."""
    missing = [m for m in (PREF_ACCURACY_METRIC, DRIFT_METRIC) if m not in history]
    if missing:
        raise UnknownMetric(f"a drift-penalised ranking needs {' and '.join(missing)} in the trials' reports; "
                            f"reported metrics: {', '.join(available_metrics(history)) or '(none)'}")
    if not (penalty >= 0 and math.isfinite(penalty)):
        raise UserError(f"--drift-penalty: must be a finite number >= 0, got {penalty}")
    return history.assign(**{DRIFT_PENALISED: history[PREF_ACCURACY_METRIC] - penalty * history[DRIFT_METRIC].abs()})


@dataclass
class Best:
    """One trial's scored report: the numbers a ranking row shows and the checkpoint holding exactly that adapter."""

    trial_id: str
    method: str
    metric: str
    mode: str
    score: float
    step: int
    report: dict[str, Any]  # every metric of that report
    checkpoint: Path | str | None  # a folder, or a URI in object storage (Experiment.local_copy); None: not kept
    config: dict[str, Any]  # the trial's sampled values


def plain(value):
    return value.item() if hasattr(value, "item") else value


def read_pair_outcomes(checkpoint: str | Path) -> list[int] | None:
    """The eval preference-accuracy outcome of each pair at that checkpoint, when the trial saved them."""
    path = Path(checkpoint) / OUTCOMES_FILE
    if not path.is_file():
        return None
    try:
        return [int(bool(v)) for v in json.loads(path.read_text())["correct"]]
    except (ValueError, KeyError, TypeError):
        return None


def saved_outcomes(ranked: pd.DataFrame, history: pd.DataFrame) -> dict[str, list[int]]:
    """Each ranked trial's per-pair outcomes saved in the checkpoint of its ranked report, by trial id (share
    metrics only: {} for any other metric)."""
    outcomes: dict[str, list[int]] = {}
    if ranked.attrs.get("metric") != PREF_ACCURACY_METRIC or CHECKPOINT_COLUMN not in history:
        return outcomes
    for _, row in ranked[ranked["rank"].notna()].iterrows():
        checkpoint = history.loc[int(row["report"]), CHECKPOINT_COLUMN]
        found = read_pair_outcomes(checkpoint) if isinstance(checkpoint, str) else None
        if found is not None:
            outcomes[row["trial_id"]] = found
    return outcomes
