"""The search space: the spec's distributions as Tune's, the most eval rounds a sampled trial can run (ASHA's
max_t), and the lines that describe the search before it starts."""

from __future__ import annotations

import itertools
from typing import Any

from tuner.spec import Distribution, Spec, with_sampled
from tuner.spec.schema import EVAL_ROUND_FIELDS


def to_tune(distribution: Distribution):
    from ray import tune

    d = distribution
    if d.type == "loguniform":
        return tune.loguniform(d.low, d.high)
    if d.type == "uniform":
        return tune.loguniform(d.low, d.high) if d.log else tune.uniform(d.low, d.high)
    if d.type == "int":  # Tune's upper bound is exclusive; the spec's is inclusive
        return (tune.lograndint if d.log else tune.randint)(int(d.low), int(d.high) + 1)
    if d.type == "choice":
        return tune.choice(d.values)
    return tune.grid_search(d.values)


def param_space(spec: Spec) -> dict[str, Any]:
    return {key: to_tune(distribution) for key, distribution in spec.search.space.items()}


def max_eval_rounds(spec: Spec, train_rows: int) -> int:
    """Eval rounds of the longest trial the search can sample. With step counts searched (train.max_steps, batch
    size, eval_steps, ...), the most over every combination of their values (choices, or the bounds of a range: the
    rounds grow or shrink monotonically with each), so that ASHA's max_t never stops a long trial early; shorter
    trials simply finish before it."""
    searched = {key: d for key, d in spec.search.space.items()
                if key.startswith("train.") and key.removeprefix("train.") in EVAL_ROUND_FIELDS}
    if not searched:
        return spec.eval_rounds(train_rows)
    values = [d.values if d.values is not None else [int(d.low), int(d.high)] if d.type == "int" else [d.low, d.high]
              for d in searched.values()]
    return max(with_sampled(spec, dict(zip(searched, combination))).eval_rounds(train_rows)
               for combination in itertools.product(*values))


def describe_space(spec: Spec) -> str:
    lines = [f"search: {spec.search.algorithm}, {spec.search.num_samples} samples, "
             f"{spec.search.max_concurrent_trials} at a time, ranked on {spec.metric} ({spec.search.mode})"]
    for key, d in spec.search.space.items():
        shape = f"{d.values}" if d.values is not None else f"[{d.low:g}, {d.high:g}]{' log' if d.log else ''}"
        lines.append(f"  {key}: {d.type} {shape}")
    if spec.search.guard_groups:
        stopped = "is stopped by ASHA and " if spec.scheduler.type == "asha" else ""
        lines.append(f"guard groups: {', '.join(spec.search.guard_groups)} (must not get worse than the base model: "
                     f"left out of {spec.metric}; a trial worse on one {stopped}never wins)")
    if spec.scheduler.type == "asha":
        lines.append(f"scheduler: ASHA, grace {spec.scheduler.grace_period} eval rounds, "
                     f"reduction {spec.scheduler.reduction_factor:g}, max_t {spec.scheduler.max_t or 'all rounds'}"
                     + ("; a trial pauses at the first rung while configurations wait to start"
                        if spec.scheduler.pause_at_first_rung else ""))
    lines.append(f"resources per trial: {spec.resources.cpu:g} CPU, {spec.resources.gpu:g} GPU")
    return "\n".join(lines)
