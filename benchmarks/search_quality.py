"""Is the search worth running? Its winner against what a user would do without it, on the test split, side by side:

- oracle: a grid over the default space's beta x learning rate (at the default LoRA rank), every cell trained for the
  full budget (no early stopping) and scored on test; its best cell that holds every guard, and the distribution;
- default: search_spaces/dpo.yaml as shipped (TPE + ASHA), once per search seed;
- random: the same number of trials drawn at random from the same space, no early stopping, once per search seed;
- hand-picked: one run at the seed report's settings (beta 0.1, learning rate 5e-6);
- TRL defaults: one run at DPOConfig's own beta and learning rate;
- noise floor: the oracle's best cell trained on 3 training seeds (a spec without a space, search.num_samples=3).

Each run has the default's steps, data and guard groups. Per run: test preference accuracy on the searched groups
(95% interval), whether every guard group held, regret (the oracle's best minus this winner, in points), the winner's
percentile among the oracle's cells, and the compute spent (trial-steps, wall time). Then the targets: the default's
median winner within 2 points of the oracle's best at <= 40% of its trial-steps, ahead of random search by median,
and ahead of the hand-picked and TRL-default runs with a paired interval (over test prompts) that excludes 0.

    python benchmarks/search_quality.py                          # embedded model, 4 x 4 oracle, 3 seeds: hours on 2 cores
    python benchmarks/search_quality.py --models embedded /path/to/hf-model   # more than one model
    python benchmarks/search_quality.py --quick                  # embedded model, 2 x 2 oracle, 1 seed
    python benchmarks/search_quality.py --dry-run                # a tiny random model, a few steps: proves it runs
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DRY_RUN, REPO, TINY_MODEL, build_model, machine, timed, tuner_command  # noqa: E402

# The default space's bounds (search_spaces/dpo.yaml: beta [0.05, 0.5], learning rate [5e-5, 1e-3], both log),
# four log-spaced values each, bounds included.
BETAS = [0.05, 0.108, 0.232, 0.5]
LEARNING_RATES = [5.0e-5, 1.36e-4, 3.68e-4, 1.0e-3]
HAND_PICKED = {"train.beta": 0.1, "train.learning_rate": 5.0e-6}  # the seed report's settings
WITHIN_POINTS, COMPUTE_SHARE = 2.0, 0.40  # the targets against the oracle


@dataclass
class Run:
    """One arm's run (an experiment) and what the test split says of its winner."""

    arm: str
    seed: int | None
    path: Path
    wall_s: float
    trial_steps: int = 0
    accuracy: list[float] = field(default_factory=lambda: [math.nan] * 3)  # value, 95% low, high; searched groups
    guards_held: bool | None = None
    config: dict = field(default_factory=dict)
    regret: float = math.nan  # points below the oracle's best
    percentile: float = math.nan  # share of the oracle's cells at or below this winner, in %
    winner: object = None  # the winner's Scored (per-pair outcomes), for the paired comparisons
    results: object = None  # the experiment's ScoredSplit


def spec_file(work: Path, name: str, edit) -> Path:
    """search_spaces/dpo.yaml changed by `edit(spec)`, written for one arm."""
    spec = yaml.safe_load((REPO / "search_spaces" / "dpo.yaml").read_text())
    edit(spec)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def oracle_spec(spec: dict, betas: list[float], learning_rates: list[float]) -> None:
    """Every cell ranked and scored on test: its guard groups are checked on the test split (read_run), not used to
    leave cells out of the distribution."""
    spec["search"].pop("guard_groups", None)
    spec["search"].update(algorithm="grid", num_samples=1, test_top_k=len(betas) * len(learning_rates), space={
        "train.beta": {"type": "grid", "values": betas},
        "train.learning_rate": {"type": "grid", "values": learning_rates}})
    spec["scheduler"] = {"type": "none"}


def random_spec(spec: dict) -> None:
    spec["search"]["algorithm"] = "random"
    spec["scheduler"] = {"type": "none"}


def fixed_spec(settings: dict | None, repeats: int = 1):
    """A spec without a space: the default's training at `settings` (None: TRL's own beta and learning rate)."""
    def edit(spec: dict) -> None:
        spec["search"].update(space={}, num_samples=repeats, test_top_k=repeats)
        spec["train"].pop("learning_rate", None)
        spec["train"].pop("beta", None)
        for key, value in (settings or {}).items():
            spec["train"][key.removeprefix("train.")] = value
    return edit


def run_arm(arm: str, seed: int | None, spec: Path, work: Path, overrides: list[str]) -> Run:
    """One arm's tuner.run. Only the searches (default, random) take a search.num_samples override: the oracle's
    grid and the fixed settings run their own count."""
    name = f"{arm}-{seed}" if seed is not None else arm
    extra = [f"search.seed={seed}"] if seed is not None else []
    if seed is None:
        overrides = [o for o in overrides if not o.startswith("search.num_samples=")]
    wall = timed(tuner_command(str(spec), work, name, *overrides, *extra), work / f"{name}.log")
    print(f"  {name}: {wall:.0f} s (log {work / f'{name}.log'})", flush=True)
    return Run(arm, seed, work / name, wall)


def read_run(run: Run, guards: list[str], top_k: int | None = None) -> Run:
    """The winner's test figures (the experiment's ranking picks it, as tuner.run's verdict does)."""
    from tuner.evidence import scoring
    from tuner.experiment.folder import Experiment

    experiment = Experiment.open(run.path)
    history = experiment.history
    run.trial_steps = int(history.groupby("trial_id")["step"].max().sum()) if len(history) else 0
    results = scoring.score_test_split(experiment, top_k=top_k, say=lambda line: None)
    run.results = replace(results, guard_groups=tuple(guards))
    winner = run.results.winner
    if winner is not None:
        estimate = run.results.accuracy(winner)
        run.accuracy = [estimate.value, estimate.low, estimate.high]
        run.guards_held = not any(broken for _, broken in run.results.guards(winner).values())
        run.winner = winner
        trials = experiment.trials.set_index("trial_id")
        run.config = {c.removeprefix("config/"): _plain(trials.loc[winner.label, c]) for c in trials.columns
                      if c.startswith("config/") and not _blank(trials.loc[winner.label, c])}
    return run


def oracle_cells(run: Run) -> list[dict]:
    """Every cell of the oracle's grid on the test split: accuracy on the searched groups and its guards."""
    cells = []
    for trial in run.results.trials:
        estimate = run.results.accuracy(trial)
        held = not any(broken for _, broken in run.results.guards(trial).values())
        cells.append({"trial": trial, "accuracy": estimate.value, "held": held})
    return cells


def place_against_oracle(runs: list[Run], cells: list[dict]) -> float:
    """Each run's regret and percentile against the oracle's cells; returns the oracle's best (guards held)."""
    held = [c["accuracy"] for c in cells if c["held"]] or [math.nan]
    best = max(held)
    every = [c["accuracy"] for c in cells]
    for run in runs:
        value = run.accuracy[0]
        run.regret = 100 * (best - value) if math.isfinite(value) else math.nan
        run.percentile = (100 * sum(a <= value for a in every) / len(every)) if math.isfinite(value) else math.nan
    return best


def paired(a: Run, b: Run):
    """Winner of `a` minus winner of `b` on the same test pairs (searched groups), resampling prompts."""
    if a.winner is None or b.winner is None:
        return None
    if list(a.results.pairs.get("pair_id", [])) != list(b.results.pairs.get("pair_id", [])):
        raise SystemExit("the runs' test splits differ: the paired comparison needs the same test pairs")
    return replace(a.results, base=b.winner, trials=[a.winner]).difference(a.winner)


def median_run(runs: list[Run]) -> Run | None:
    """The run whose winner is the median over seeds (the lower middle for an even count)."""
    scored = sorted((r for r in runs if math.isfinite(r.accuracy[0])), key=lambda r: r.accuracy[0])
    return scored[(len(scored) - 1) // 2] if scored else None


def print_table(model: str, runs: list[Run], oracle_best: float, cells: list[dict], noise: list[float]) -> None:
    print(f"\nmodel {model}: test preference accuracy on the searched groups (95% interval); regret = oracle's best "
          f"({100 * oracle_best:.1f}) minus the winner, in points")
    print(f"{'arm':<14} {'seed':>4} {'accuracy [95% CI]':>22} {'guards':>7} {'regret':>7} {'pctile':>6} "
          f"{'trial-steps':>11} {'wall s':>7}  winner's config")
    for run in runs:
        a = run.accuracy
        shown = f"{100 * a[0]:.1f} [{100 * a[1]:.1f}, {100 * a[2]:.1f}]" if math.isfinite(a[0]) else "no winner"
        held = {True: "held", False: "WORSE", None: "-"}[run.guards_held]
        seed = "-" if run.seed is None else str(run.seed)
        config = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in run.config.items()}
        print(f"{run.arm:<14} {seed:>4} {shown:>22} {held:>7} {run.regret:>+7.1f} {run.percentile:>5.0f}% "
              f"{run.trial_steps:>11} {run.wall_s:>7.0f}  {config}")
    spread = [100 * a for a in cells_accuracy(cells)]
    print(f"oracle cells ({len(cells)}): {', '.join(f'{a:.1f}' for a in sorted(spread))} "
          f"({sum(not c['held'] for c in cells)} broke a guard)")
    if noise:
        print(f"noise floor: the oracle's best cell on {len(noise)} training seeds: {min(noise):.1f} to "
              f"{max(noise):.1f} (spread {max(noise) - min(noise):.1f} points); a regret or gap below that is noise")


def cells_accuracy(cells: list[dict]) -> list[float]:
    return [c["accuracy"] for c in cells]


def check_targets(runs: list[Run], oracle: Run) -> list[tuple[str, bool | None, str]]:
    """The targets, each as (name, met or None when it cannot be judged, the figures)."""
    by_arm = {arm: [r for r in runs if r.arm == arm] for arm in ("default", "random", "hand-picked", "trl-defaults")}
    default, random_ = median_run(by_arm["default"]), median_run(by_arm["random"])
    out = []
    if default is None:
        return [("default search has a winner", False, "no default run had a winner on the test split")]
    steps = statistics.median(r.trial_steps for r in by_arm["default"])
    share = steps / oracle.trial_steps if oracle.trial_steps else math.nan
    out.append((f"default within {WITHIN_POINTS:g} points of the oracle's best at <= {COMPUTE_SHARE:.0%} of its "
                f"compute", default.regret <= WITHIN_POINTS and share <= COMPUTE_SHARE,
                f"median regret {default.regret:+.1f} points, median {steps:.0f} trial-steps = {share:.0%} of the "
                f"oracle's {oracle.trial_steps}"))
    if random_ is not None:
        steps_random = statistics.median(r.trial_steps for r in by_arm["random"])
        out.append(("default ahead of random search by median over seeds", default.accuracy[0] > random_.accuracy[0],
                    f"default {100 * default.accuracy[0]:.1f} vs random {100 * random_.accuracy[0]:.1f} "
                    f"(random spent {steps_random:.0f} trial-steps)"))
    for arm in ("hand-picked", "trl-defaults"):
        other = by_arm[arm][0] if by_arm[arm] else None
        difference = paired(default, other) if other is not None else None
        if difference is None:
            out.append((f"default ahead of {arm}", None, "not run or no winner"))
            continue
        e = difference.estimate
        out.append((f"default ahead of {arm} (paired interval excludes 0)", e.low > 0,
                    f"{100 * e.value:+.1f} points [{100 * e.low:+.1f}, {100 * e.high:+.1f}], {difference.a_only} pairs "
                    f"fixed, {difference.b_only} broken"))
    return out


def benchmark_model(model: str, work: Path, args, overrides: list[str]) -> dict:
    from trl import DPOConfig

    from tuner.experiment.folder import Experiment

    print(f"\nmodel {model}: running the arms in {work}", flush=True)
    guards = yaml.safe_load((REPO / "search_spaces" / "dpo.yaml").read_text())["search"].get("guard_groups", [])
    overrides = [f"model.name={model}", *overrides]
    cells_n = len(args.betas) * len(args.lrs)
    oracle = read_run(run_arm("oracle", None, spec_file(work, "oracle", lambda s: oracle_spec(s, args.betas, args.lrs)),
                              work, overrides), guards, top_k=cells_n)
    runs = [read_run(run_arm("default", seed, REPO / "search_spaces" / "dpo.yaml", work, overrides), guards)
            for seed in args.seeds]
    runs += [read_run(run_arm("random", seed, spec_file(work, "random", random_spec), work, overrides), guards)
             for seed in args.seeds]
    runs.append(read_run(run_arm("hand-picked", None, spec_file(work, "hand", fixed_spec(HAND_PICKED)), work,
                                 overrides), guards))
    runs[-1].config = dict(HAND_PICKED)
    runs.append(read_run(run_arm("trl-defaults", None, spec_file(work, "trl", fixed_spec(None)), work, overrides),
                         guards))
    runs[-1].config = {"train.beta": DPOConfig.beta, "train.learning_rate": DPOConfig.learning_rate}  # TRL's own
    cells = oracle_cells(oracle)
    best_cell = max((c for c in cells if c["held"]), key=lambda c: c["accuracy"], default=None)
    noise = []
    if best_cell is not None and args.noise_seeds > 1:
        trials = Experiment.open(oracle.path).trials
        row = trials.set_index("trial_id").loc[best_cell["trial"].label]
        settings = {"train.beta": float(row["config/train.beta"]), "train.learning_rate":
                    float(row["config/train.learning_rate"])}
        repeats = read_run(run_arm("noise-floor", None, spec_file(work, "noise", fixed_spec(settings, args.noise_seeds)),
                                   work, overrides), guards, top_k=args.noise_seeds)
        noise = [100 * repeats.results.accuracy(t).value for t in repeats.results.trials]
    oracle.config = {"cells": cells_n}
    oracle_best = place_against_oracle([oracle, *runs], cells)
    oracle.accuracy[0] = oracle_best
    oracle.regret, oracle.guards_held = 0.0, True
    print_table(model, [oracle, *runs], oracle_best, cells, noise)
    targets = check_targets(runs, oracle)
    print("targets:")
    for name, met, figures in targets:
        print(f"  {'MET' if met else 'not judged' if met is None else 'NOT MET'}: {name}: {figures}")
    return {"model": model, "oracle_best": oracle_best, "oracle_cells": cells_accuracy(cells), "noise_floor": noise,
            "runs": [{"arm": r.arm, "seed": r.seed, "accuracy": r.accuracy, "guards_held": r.guards_held,
                      "regret": r.regret, "percentile": r.percentile, "trial_steps": r.trial_steps,
                      "wall_s": r.wall_s, "config": r.config} for r in [oracle, *runs]],
            "targets": [{"target": n, "met": m, "figures": f} for n, m, f in targets]}


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of search_spaces/dpo.yaml, every arm")
    parser.add_argument("--models", nargs="+", default=["embedded"], help="model.name values, one benchmark each")
    parser.add_argument("--betas", type=float, nargs="+", default=BETAS, help="the oracle grid's betas")
    parser.add_argument("--lrs", type=float, nargs="+", default=LEARNING_RATES, help="the oracle grid's learning rates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds (default and random)")
    parser.add_argument("--noise-seeds", type=int, default=3, help="training seeds of the oracle's best cell")
    parser.add_argument("--quick", action="store_true", help="a 2 x 2 oracle, one search seed, 2 training seeds")
    parser.add_argument("--dry-run", action="store_true", help="--quick on a tiny random model and a few steps")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-search-quality-"))
    overrides = args.overrides
    if args.quick or args.dry_run:
        args.betas, args.lrs = [args.betas[0], args.betas[-1]], [args.lrs[0], args.lrs[-1]]
        args.seeds, args.noise_seeds = args.seeds[:1], min(args.noise_seeds, 2)
    if args.dry_run:
        args.models = [str(build_model(work / "model", TINY_MODEL))]
        overrides = [*DRY_RUN, *overrides]
    figures = []
    for i, model in enumerate(args.models):
        folder = work / f"model-{i}"
        folder.mkdir()
        figures.append(benchmark_model(model, folder, args, overrides))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
