"""The search space: the spec's distributions as Tune's, the trials of a search that samples nothing (fixed settings
or a grid, repeated over training seeds), the most eval rounds a sampled trial can run (ASHA's max_t), and the lines
that describe the search before it starts."""

from __future__ import annotations

import itertools
import json
from typing import Any

from tuner.spec import BASELINE_KEY, Distribution, Spec, with_sampled
from tuner.spec.schema import EVAL_ROUND_FIELDS
from tuner.trial import methods

SEED_KEY = "train.seed"  # TRL's training seed: data order and the adapter's initial weights


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
    """Tune's param_space. A search that samples nothing lists its trials (planned_trials), which Tune's generator
    takes as points: each of their keys is a choice among the values they give it, so each point is valid."""
    planned = planned_trials(spec)
    if planned is not None:
        from ray import tune

        keys = dict.fromkeys(key for config in planned for key in config)
        space = {key: tune.choice(_distinct_values(config[key] for config in planned if key in config))
                 for key in keys}
    else:
        space = {key: to_tune(distribution) for key, distribution in spec.search.space.items()}
    if spec.search.baseline is not None:
        space[BASELINE_KEY] = False  # the baseline trial's config says True (baseline_config)
    return space


def spec_value(spec: Spec, key: str) -> Any:
    """What a searched key is when the search leaves it out: the spec's own value (the train section, else TRL's
    default from the built config; the other sections' fields), for the key's method when it is scoped."""
    scope, unscoped = methods.scoped(key)
    method = scope or spec.method
    if unscoped == "method":
        return method
    section, _, name = unscoped.partition(".")
    if section == "train":
        values = spec.train_values()
        return values[name] if name in values else getattr(spec.trl_args(method), name)
    node: Any = spec.model_dump(mode="json")
    for part in unscoped.split("."):
        node = node[part]
    return node


def baseline_config(spec: Spec) -> dict[str, Any] | None:
    """The baseline trial's config (search.baseline): every searched key at the value the baseline gives it, else
    at the spec's own (spec_value), marked as the baseline. None when the spec asks for no baseline."""
    if spec.search.baseline is None:
        return None
    given = spec.search.baseline
    config = {key: given[key] if key in given else spec_value(spec, key) for key in spec.search.space}
    return {**config, BASELINE_KEY: True}


def trial_count(spec: Spec) -> int:
    """Tune's num_samples: the search's trials (search.num_samples, or the listed ones of a search that samples
    nothing), and the baseline trial."""
    planned = planned_trials(spec)
    return (spec.search.num_samples if planned is None else len(planned)) + (spec.search.baseline is not None)


def planned_trials(spec: Spec) -> list[dict[str, Any]] | None:
    """The trials of a search that samples nothing (SearchSpec.samples_nothing), in order, as Tune's grid generator
    counts them: each point of search.points_to_evaluate (over the grid keys it leaves out) is one sample, and each
    remaining sample of search.num_samples is a pass over every grid cell. A trial that would repeat an earlier
    trial's settings exactly trains on the next training seed instead (train.seed + 1, ...): the same settings twice
    on one seed would be the same run twice, while over seeds they show how far training's own noise moves the
    metric. None for a search that samples: Tune and Optuna draw its trials as it runs."""
    search = spec.search
    if not search.samples_nothing():
        return None
    constants = {key: d.values[0] for key, d in search.space.items() if d.type == "choice"}
    grid = {key: d.values for key, d in search.space.items() if d.type == "grid"}

    def cells(fixed: dict[str, Any]) -> list[dict[str, Any]]:
        open_keys = [key for key in grid if key not in fixed]
        return [{**constants, **dict(zip(open_keys, values)), **fixed}
                for values in itertools.product(*(grid[key] for key in open_keys))]

    configs = [config for point in search.points_to_evaluate for config in cells(dict(point))]
    configs += [config for _ in range(max(0, search.num_samples - len(search.points_to_evaluate)))
                for config in cells({})]
    seeds: dict[str, set[int]] = {}
    repeated = False
    for config in configs:
        method = config.get("method", spec.method)
        applied = methods.for_method(config, method)
        settings = _settings(applied)
        seed = int(applied.get(SEED_KEY, spec.trl_args(method).seed))
        taken = seeds.setdefault(settings, set())
        repeated |= seed in taken
        while seed in taken:
            seed += 1
        taken.add(seed)
        config[SEED_KEY] = seed
    if not repeated and SEED_KEY not in search.space:
        for config in configs:  # every trial on the spec's own seed: nothing to show
            del config[SEED_KEY]
    return configs


def shown_keys(spec: Spec) -> list[str]:
    """The config keys that tell a search's trials apart: the searched keys, and the training seed where repeats
    of the same settings differ by it."""
    keys = list(spec.search.space)
    if SEED_KEY not in keys and any(SEED_KEY in config for config in planned_trials(spec) or []):
        keys.append(SEED_KEY)
    return keys


def settings_count(planned: list[dict[str, Any]]) -> int:
    """How many distinct settings the planned trials train, the training seed aside."""
    return len({_settings(config) for config in planned})


def races_trials(spec: Spec) -> bool:
    """Whether ASHA may stop a trial for scoring below others: not among repeats of one setting over training
    seeds, where the trials differ only by noise (stopping the unlucky ones would hide the spread they measure);
    a broken guard group still stops a trial."""
    planned = planned_trials(spec)
    return spec.scheduler.type == "asha" and (planned is None or settings_count(planned) > 1)


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
    planned = planned_trials(spec)
    at_a_time = (f"{spec.search.max_concurrent_trials} at a time, ranked on {spec.metric} ({spec.search.mode})")
    if planned is None:
        lines = [f"search: {spec.search.algorithm}, {spec.search.num_samples} samples, {at_a_time}"]
    else:
        first, *notes = _describe_planned(spec, planned)
        lines = [f"{first}, {at_a_time}", *notes]
    for key, d in spec.search.space.items():
        shape = f"{d.values}" if d.values is not None else f"[{d.low:g}, {d.high:g}]{' log' if d.log else ''}"
        lines.append(f"  {key}: {d.type} {shape}")
    if (baseline := baseline_config(spec)) is not None:
        settings = ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                             for key, value in baseline.items() if key != BASELINE_KEY)
        lines.append(f"baseline: one more trial at {settings} (search.baseline): the full budget, not raced, not "
                     f"ranked; the test split compares the winner with it")
    if spec.search.guard_groups:
        stopped = "is stopped by ASHA and " if spec.scheduler.type == "asha" else ""
        lines.append(f"guard groups: {', '.join(spec.search.guard_groups)} (must not get worse than the base model: "
                     f"left out of {spec.metric}; a trial worse on one {stopped}never wins)")
    if spec.scheduler.type == "asha" and not races_trials(spec):
        what = ("scheduler: none (one trial: nothing to race)" if len(planned) == 1 else
                "scheduler: none between the repeats (they differ only by training seed)")
        lines.append(f"{what}; a trial that breaks a guard group is still stopped" if spec.search.guard_groups else what)
    elif spec.scheduler.type == "asha":
        lines.append(f"scheduler: ASHA, grace {spec.scheduler.grace_period} eval rounds, "
                     f"reduction {spec.scheduler.reduction_factor:g}, max_t {spec.scheduler.max_t or 'all rounds'}"
                     + ("; a trial pauses at the first rung while configurations wait to start"
                        if spec.scheduler.pause_at_first_rung else ""))
    lines.append(f"resources per trial: {spec.resources.cpu:g} CPU, {spec.resources.gpu:g} GPU")
    return "\n".join(lines)


def _describe_planned(spec: Spec, planned: list[dict[str, Any]]) -> list[str]:
    runs: dict[str, int] = {}
    for config in planned:
        settings = _settings(config)
        runs[settings] = runs.get(settings, 0) + 1
    grid = any(d.type == "grid" for d in spec.search.space.values())
    what = ("fixed settings" if len(runs) == 1 else f"grid of {len(runs)} settings" if grid
            else f"{len(runs)} listed settings")
    lines = [f"search: {what}, {len(planned)} trial(s)"]
    if spec.search.algorithm == "optuna":
        lines.append("  nothing in search.space is sampled, so Optuna has nothing to choose: the trials are listed")
    seeds = sorted({c[SEED_KEY] for c in planned if SEED_KEY in c})
    if seeds and SEED_KEY not in spec.search.space:
        times = max(runs.values())
        each = "the settings run" if len(runs) == 1 else "each setting runs"
        how_often = f"{times} times" if min(runs.values()) == times else f"up to {times} times"
        lines.append(f"  {each} {how_often}, on training seeds {_seed_range(seeds)} (train.seed): the spread over "
                     f"seeds is the noise floor a gap between settings must clear")
    return lines


def _seed_range(seeds: list[int]) -> str:
    return (", ".join(map(str, seeds)) if len(seeds) <= 4 or seeds != list(range(seeds[0], seeds[-1] + 1))
            else f"{seeds[0]} to {seeds[-1]}")


def _distinct_values(values) -> list[Any]:
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(json.dumps(value, sort_keys=True, default=str), value)
    return list(seen.values())


def _settings(config: dict[str, Any]) -> str:
    """A trial's settings, the training seed aside, as one comparable string."""
    return json.dumps({k: v for k, v in config.items() if k != SEED_KEY}, sort_keys=True, default=str)
