"""Run a search: `python -m tuner.run SPEC [key=value ...] [--name NAME] [--address ADDR] [--dry-run]`.

Validates the spec (every problem at once, exit 2, nothing written), converts the embedded model once, prepares the
data once, starts or attaches to Ray, runs the Tune search, and ends with the ranking and the best checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tuner.spec import Spec, SpecError, load_spec, to_yaml

USER_ERROR = 2
BASE_METRICS_FILE = "base_metrics.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tuner.run", description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="search spec YAML, e.g. search_spaces/dpo.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. search.num_samples=2")
    parser.add_argument("--name", help="experiment folder name under run.storage_path (default: method-timestamp)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="attach to this Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the resolved spec; start nothing")
    parser.add_argument("--top", type=int, default=5, help="how many trials the final table shows")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    return parser.parse_intermixed_args(argv)


def describe_space(spec: Spec) -> str:
    lines = [f"search: {spec.search.algorithm}, {spec.search.num_samples} samples, "
             f"{spec.search.max_concurrent_trials} at a time, ranked on {spec.metric} ({spec.search.mode})"]
    for key, d in spec.search.space.items():
        shape = f"{d.values}" if d.values is not None else f"[{d.low:g}, {d.high:g}]{' log' if d.log else ''}"
        lines.append(f"  {key}: {d.type} {shape}")
    if spec.scheduler.type == "asha":
        lines.append(f"scheduler: ASHA, grace {spec.scheduler.grace_period} eval rounds, "
                     f"reduction {spec.scheduler.reduction_factor:g}, max_t {spec.scheduler.max_t or 'all rounds'}")
    lines.append(f"resources per trial: {spec.resources.cpu:g} CPU, {spec.resources.gpu:g} GPU")
    return "\n".join(lines)


def fail(message: str) -> int:
    print(f"tuner: {message}", file=sys.stderr)
    return USER_ERROR


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = load_spec(args.spec, args.overrides)
    except SpecError as error:
        problems = "\n".join(f"  - {p}" for p in error.problems)
        return fail(f"{args.spec}: {len(error.problems)} problem(s):\n{problems}")
    if args.dry_run:
        print(to_yaml(spec))
        print(describe_space(spec))
        return 0

    from tuner import data, models, quality, search
    from tuner.embedded import EmbeddedModelMissing

    try:
        for name in _model_names(spec):
            models.check_loadable(name)
        train, held_out = data.load_pairs(spec.data)
        experiment = search.new_experiment(spec, args.name or search.default_name(spec))
    except (models.ModelError, EmbeddedModelMissing, data.DataError, FileExistsError) as error:
        if args.debug:
            raise
        return fail(str(error))
    train.save_to_disk(str(experiment.data_dir / "train"))
    held_out.save_to_disk(str(experiment.data_dir / "eval"))
    print(f"data: {len(train)} train pairs, {len(held_out)} eval pairs (no prompt in both)")
    share_reference(spec, train, held_out, experiment.data_dir)
    base = quality.base_model_metrics(models.resolve(spec.model.name), held_out, spec.model.max_length,
                                      spec.train.get("per_device_eval_batch_size", 8))
    (experiment.tuner_dir / BASE_METRICS_FILE).write_text(json.dumps(base))
    print(f"base model: {', '.join(f'{k} = {v:.3f}' for k, v in base.items())}")
    print(describe_space(spec))

    context = search.start_ray(args.address)
    if context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}")
    print(f"Optuna study: optuna-dashboard {experiment.optuna_url}" if spec.search.algorithm == "optuna" else "")
    tuner = search.build_tuner(spec, experiment, train_rows=len(train))
    tuner.fit()
    return report(spec, experiment.path, args.top)


def share_reference(spec: Spec, train, held_out, data_dir: Path) -> None:
    import time

    from tuner import backends, models, reference

    reason = reference.why_not_shared(spec, backends.resolve_backend(spec.model.backend))
    if reason:
        print(f"reference log-probs: computed in each trial ({reason})")
        return
    started = time.perf_counter()
    sizes = reference.precompute(spec, models.resolve(spec.model.name), train, held_out,
                                 data_dir / reference.SHARED_DIR)
    print(f"reference log-probs: computed once for {sizes['train']} train and {sizes['eval']} eval pairs "
          f"in {time.perf_counter() - started:.0f} s, shared by every DPO trial")


def report(spec: Spec, path: Path, top: int) -> int:
    from analysis.load import best_checkpoint, load_experiment
    from analysis.ranking import rank_trials
    from analysis.summary import describe_best, ranking_table

    experiment = load_experiment(path)
    ranked = rank_trials(experiment.trials, experiment.history, spec.metric, spec.search.mode,
                         base=experiment.base)
    print(f"\nTop trials by {spec.metric} ({spec.search.mode}):")
    print(ranking_table(ranked, top))
    print(describe_best(ranked))
    if not ranked.empty and ranked.iloc[0]["rank"] == 1:
        checkpoint = best_checkpoint(experiment, ranked.iloc[0]["trial_id"], spec.metric, spec.search.mode)
        print(f"best checkpoint (LoRA adapter + tokenizer): {checkpoint.path if checkpoint else 'none kept'}")
    print(f"results: {path}\nreport: python -m analysis {path}")
    return 0


def _model_names(spec: Spec) -> list[str]:
    searched = spec.search.space.get("model.name")
    return list(searched.values) if searched is not None else [spec.model.name]


if __name__ == "__main__":
    sys.exit(main())
