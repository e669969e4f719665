"""Figures (matplotlib, PNG): one per training metric with a train and an eval line per trial against step, a
scatter of each searched parameter against the ranking score, and Optuna's parameter importances."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# TRL's names, without the eval_ prefix: the train series is `name`, the eval series `eval_name`.
CURVE_METRICS = ["loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected",
                 "log_odds_ratio", "log_odds_chosen", "nll_loss"]
MIN_TRIALS_FOR_IMPORTANCE = 4


def _file_name(metric: str) -> str:
    return metric.replace("/", "_") + ".png"


def plot_curves(history: pd.DataFrame, best_trial: str | None, out_dir: Path) -> list[Path]:
    """One figure per metric that any trial reported, train solid and eval dashed, the best trial in colour."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    x = "step" if "step" in history else "training_iteration"
    for metric in CURVE_METRICS:
        series = [c for c in (metric, f"eval_{metric}") if c in history and history[c].notna().any()]
        if not series:
            continue
        figure, axis = plt.subplots(figsize=(7, 4.2))
        for index, (trial_id, reports) in enumerate(history.sort_values(x).groupby("trial_id", sort=True)):
            is_best = trial_id == best_trial
            style = ({"color": "tab:red", "linewidth": 2.4, "zorder": 3} if is_best else
                     {"color": plt.cm.tab10(index % 10), "alpha": 0.6, "linewidth": 1})
            for column in series:
                axis.plot(reports[x], reports[column], linestyle="--" if column.startswith("eval_") else "-",
                          marker="o", markersize=3, label=f"{trial_id}{' (best)' if is_best else ''} "
                          f"{'eval' if column.startswith('eval_') else 'train'}", **style)
        axis.set(title=f"{metric} (train solid, eval dashed)", xlabel=x, ylabel=metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, ncol=2, loc="best")
        figure.tight_layout()
        path = out_dir / _file_name(metric)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def plot_parameters(ranked: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Each searched parameter against the trial's score; the x axis is logarithmic where values span 10x."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = ranked.attrs.get("metric", "score")
    written = []
    for column in [c for c in ranked.columns if c.startswith("config/")]:
        ranked_here = ranked[ranked[column].notna()]  # a key scoped to one method is blank for the others
        if ranked_here.empty:
            continue
        values = ranked_here[column]
        name = column.removeprefix("config/")
        figure, axis = plt.subplots(figsize=(5, 3.6))
        numeric = pd.to_numeric(values, errors="coerce")
        colours = np.where(ranked_here["rank"] == 1, "tab:red", "tab:blue")
        if numeric.notna().all():
            axis.scatter(numeric, ranked_here["score"], c=colours)
            if numeric.min() > 0 and numeric.max() / numeric.min() >= 10:
                axis.set_xscale("log")
        else:
            axis.scatter(values.astype(str), ranked_here["score"], c=colours)
        axis.set(title=f"{name} vs {metric}", xlabel=name, ylabel=f"{metric} ({ranked.attrs.get('scope', 'best')})")
        axis.grid(alpha=0.3)
        figure.tight_layout()
        path = out_dir / f"param_{_file_name(name)}"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def plot_importances(importances: dict[str, float], out_dir: Path) -> Path | None:
    if not importances:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(importances)[::-1]
    figure, axis = plt.subplots(figsize=(5, 0.5 + 0.5 * len(names)))
    axis.barh(names, [importances[n] for n in names], color="tab:green")
    axis.set(title="Optuna parameter importance (fANOVA)", xlabel="importance")
    figure.tight_layout()
    path = out_dir / "param_importances.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def optuna_importances(storage, study_name: str) -> dict[str, float]:
    """Importances from the study tuner.run stored, or {} when it holds too few finished trials to say."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)  # a URL or an Optuna storage
    except KeyError:
        return {}
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # every searched key is in every trial's params (best_trial would raise when no trial held its guard groups)
    if len(finished) < MIN_TRIALS_FOR_IMPORTANCE or len(finished[-1].params) < 2:
        return {}
    return optuna.importance.get_param_importances(study)


def pareto_front(accuracy: list[float], distance: list[float]) -> list[bool]:
    """Which points no other point beats on both axes (higher accuracy, lower distance from the reference)."""
    points = list(zip(accuracy, distance))
    return [not any(a2 >= a and d2 <= d and (a2, d2) != (a, d) for a2, d2 in points) for a, d in points]


def plot_accuracy_vs_drift(points: pd.DataFrame, out_dir: Path, name: str, title: str) -> Path | None:
    """Each model's preference accuracy against how far it moved from the reference (|drift|, the mean per-token
    log-ratio to the base model), the Pareto front joined by a line: DPO's reward/KL frontier, per trial. `points`
    has label, accuracy, drift (the base model is the point at drift 0)."""
    points = points.assign(accuracy=pd.to_numeric(points["accuracy"], errors="coerce"),
                           drift=pd.to_numeric(points["drift"], errors="coerce"))
    points = points[np.isfinite(points["accuracy"]) & np.isfinite(points["drift"])]
    if len(points) < 2:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    distance = points["drift"].abs().to_numpy()
    front = np.array(pareto_front(points["accuracy"].tolist(), distance.tolist()))
    figure, axis = plt.subplots(figsize=(6, 4.2))
    axis.scatter(distance[~front], points["accuracy"][~front], color="tab:blue", label="trial")
    axis.scatter(distance[front], points["accuracy"][front], color="tab:red", zorder=3, label="Pareto front")
    order = np.argsort(distance[front])
    axis.plot(distance[front][order], points["accuracy"].to_numpy()[front][order], color="tab:red", linewidth=1)
    for (_, row), x in zip(points.iterrows(), distance):
        axis.annotate(str(row["label"]), (x, row["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axis.set(title=title, xlabel="|drift|: |mean per-token log-ratio to the reference|", ylabel="preference accuracy")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path = out_dir / f"accuracy_vs_drift_{name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
