"""Checks of the search section that span its keys and the rest of the spec: the algorithm against the space's
types, points_to_evaluate and the baseline against the searched keys, the metric against what trials report, and
the guard groups against the eval groups. Part of tuner.spec.checks.cross_check."""

from __future__ import annotations

import difflib
from typing import Any

from tuner.spec.schema import SearchSpec
from tuner.trial import methods


def search_problems(raw: dict[str, Any], possible_methods_: list[str]) -> list[str]:
    problems: list[str] = []
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    space = search.get("space") if isinstance(search.get("space"), dict) else {}
    algorithm = search.get("algorithm", SearchSpec.model_fields["algorithm"].default)
    types = {key: d.get("type") for key, d in space.items() if isinstance(d, dict)}
    if algorithm == "optuna" and "grid" in types.values():
        problems.append(f"search.space: grid values need search.algorithm grid or random, got algorithm='optuna' "
                        f"with grid keys {[k for k, t in types.items() if t == 'grid']}")
    if algorithm == "grid":
        sampled = [k for k, t in types.items() if t not in ("grid", "choice")]
        if sampled:
            problems.append(f"search.space: algorithm 'grid' takes only grid or choice, got sampled keys {sampled}")
    for i, point in enumerate(search.get("points_to_evaluate") or []):
        if isinstance(point, dict):
            extra = [k for k in point if k not in space]
            if extra:
                problems.append(f"search.points_to_evaluate.{i}: keys must be searched keys {sorted(space)}, got {extra}")
            missing = [k for k in space if k not in point]
            if algorithm == "optuna" and missing and not extra:
                problems.append(f"search.points_to_evaluate.{i}: Optuna needs a value for every searched key, "
                                f"missing {missing} (algorithm random fills them in), got {point}")
    baseline = search.get("baseline")
    if isinstance(baseline, dict) or baseline is True:
        if not space:
            problems.append("search.baseline: the search has no space, so its one setting is the baseline already; "
                            f"add a search.space to compare a search with it, got baseline {baseline!r}")
        elif isinstance(baseline, dict) and (extra := [k for k in baseline if k not in space]):
            problems.append(f"search.baseline: keys must be searched keys {sorted(space)} (the rest of the spec is the "
                            f"baseline's already), got {extra}")

    if search.get("metric") is None and len(set(possible_methods_)) > 1:
        problems.append(f"search.metric: required when method is searched (each method reports its own metric; "
                        f"eval_loss is reported by both), got None")
    problems += _check_metric(search.get("metric"), possible_methods_)
    problems += _check_guard_groups(raw)
    return problems


def _check_guard_groups(raw: dict[str, Any]) -> list[str]:
    """Guard groups are groups of the eval pairs, and leave at least one group for the search metric."""
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    guards = search.get("guard_groups")
    if not isinstance(guards, list) or not guards:
        return []
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    eval_groups = data.get("eval_groups")
    if isinstance(eval_groups, list):
        outside = [g for g in guards if g not in eval_groups]
        if outside:
            return [f"search.guard_groups: {outside} not in data.eval_groups {eval_groups}: a guard is checked on "
                    f"the eval pairs, got {guards}"]
        if not [g for g in eval_groups if g not in guards]:
            return [f"search.guard_groups: every eval group is a guard, which leaves no pairs for the search "
                    f"metric (data.eval_groups {eval_groups}), got {guards}"]
    return []


def _check_metric(metric: Any, methods_: list[str]) -> list[str]:
    """Ray stops the whole search at the first report that lacks the search metric: refuse it before anything runs."""
    if not isinstance(metric, str):
        return []
    for method in methods_:
        reported = methods.EVAL_METRICS[method]
        if metric not in reported:
            close = difflib.get_close_matches(metric, sorted(reported), n=2, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            return [f"search.metric: {method.upper()} trials never report it{hint}; they report "
                    f"{', '.join(sorted(reported))}, got {metric!r}"]
    return []
