"""Where the default search space lies: a beta x learning-rate grid of DPO trials on the default data and model,
each trial trained for the default budget (no early stopping) and scored once on the test split. Prints, per grid
point, the test preference accuracy per group with its 95% interval, the paired difference from the base model on
the searched groups, each guard group's change and whether it held, and the drift from the base model.

    python benchmarks/sensitivity.py                                  # 3 betas x 4 learning rates, about 30 min
    python benchmarks/sensitivity.py --betas 0.1 --lrs 1e-4 1e-3      # a smaller map
    python benchmarks/sensitivity.py --dry-run                        # a tiny model, seconds: proves it runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DRY_RUN, REPO, TINY_MODEL, build_model, machine, timed  # noqa: E402

BETAS = [0.05, 0.1, 0.3]
LEARNING_RATES = [1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3]


def grid_spec(betas: list[float], learning_rates: list[float], work: Path) -> tuple[Path, list[str]]:
    """search_spaces/dpo.yaml with its space replaced by the grid, every trial run to the end and scored on test,
    and its guard groups: checked on the test split here, not used to leave trials out of the map."""
    spec = yaml.safe_load((REPO / "search_spaces" / "dpo.yaml").read_text())
    guards = spec["search"].pop("guard_groups", [])
    spec["search"].update(algorithm="grid", num_samples=1, test_top_k=len(betas) * len(learning_rates), space={
        "train.beta": {"type": "grid", "values": betas},
        "train.learning_rate": {"type": "grid", "values": learning_rates}})
    spec["search"].pop("seed", None)
    spec["scheduler"] = {"type": "none"}
    path = work / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, guards


def sensitivity_table(path: Path, guards: list[str]) -> list[dict]:
    """One row per trial of a finished grid: its configuration and what the test split says of it, with `guards`
    as the guard groups."""
    from dataclasses import replace

    from tuner.evidence import scoring, stats
    from tuner.experiment.folder import Experiment

    experiment = Experiment.open(path)
    results = replace(scoring.score_test_split(experiment, top_k=len(experiment.trials)), guard_groups=tuple(guards))
    rows = []
    for trial in results.trials:
        difference = results.difference(trial)
        groups = {}
        for group in sorted(set(results.pairs["group"])) if "group" in results.pairs else []:
            members = results.mask & results.in_groups([group])
            estimate = stats.accuracy(results.outcomes(trial, members))
            base = results.outcomes(results.base, members).mean()
            groups[group] = [estimate.value, estimate.low, estimate.high, float(base)]
        rows.append({
            "trial_id": trial.label, "beta": trial_config(experiment, trial.label, "train.beta"),
            "learning_rate": trial_config(experiment, trial.label, "train.learning_rate"), "step": trial.step,
            "difference": [difference.estimate.value, difference.estimate.low, difference.estimate.high],
            "better": bool(difference.distinguishable and difference.estimate.value > 0),
            "guards": {g: {"change": d.estimate.value, "broken": broken}
                       for g, (d, broken) in results.guards(trial).items()},
            "groups": groups, "drift": results.drift(trial)})
    return sorted(rows, key=lambda row: (row["beta"], row["learning_rate"]))


def trial_config(experiment, trial_id: str, key: str) -> float:
    trials = experiment.trials.set_index("trial_id")
    return float(trials.loc[trial_id, f"config/{key}"])


def print_table(rows: list[dict]) -> None:
    groups = sorted({g for row in rows for g in row["groups"]})
    guards = sorted({g for row in rows for g in row["guards"]})
    print(f"\n{'beta':>5} {'lr':>8} {'vs base, searched groups':>26} " +
          " ".join(f"{g[:12]:>19}" for g in groups) + f" {'drift':>7}  guards")
    if rows:
        print(f"{'base model':>14} {'':>26} " + " ".join(f"{rows[0]['groups'][g][3]:>19.3f}" for g in groups))
    for row in rows:
        d = row["difference"]
        shown = " ".join(f"{row['groups'][g][0]:.2f} [{row['groups'][g][1]:.2f},{row['groups'][g][2]:.2f}]"
                         .rjust(19) for g in groups)
        held = ", ".join(f"{g} {'WORSE' if row['guards'][g]['broken'] else 'held'}" for g in guards) or "-"
        mark = "*" if row["better"] and not any(v["broken"] for v in row["guards"].values()) else " "
        print(f"{row['beta']:>5g} {row['learning_rate']:>8.1e} {100 * d[0]:+6.1f} [{100 * d[1]:+5.1f},{100 * d[2]:+5.1f}]{mark:>8} "
              f"{shown} {row['drift']:+7.3f}  {held}")
    print("* better than the base model on the searched groups (paired interval excludes 0), every guard held")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of search_spaces/dpo.yaml")
    parser.add_argument("--betas", type=float, nargs="+", default=BETAS)
    parser.add_argument("--lrs", type=float, nargs="+", default=LEARNING_RATES, help="learning rates")
    parser.add_argument("--dry-run", action="store_true", help="a tiny random model and a few steps")
    parser.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-sensitivity-"))
    overrides = args.overrides
    if args.dry_run:
        args.betas, args.lrs = args.betas[:1], args.lrs[:2]
        overrides = [f"model.name={build_model(work / 'model', TINY_MODEL)}",
                     *[o for o in DRY_RUN if not o.startswith("search.num_samples")], *overrides]
    spec, guards = grid_spec(args.betas, args.lrs, work)
    command = [sys.executable, "-m", "tuner.run", str(spec), f"run.storage_path={work}", "--name", "grid",
               *overrides]
    wall = timed(command, work / "grid.log")
    rows = sensitivity_table(work / "grid", guards)
    print(f"{len(rows)} trials of {len(args.betas)} beta(s) x {len(args.lrs)} learning rate(s) in {wall:.0f} s; "
          f"test split accuracy per group [95% interval]")
    print_table(rows)
    print(f"log: {work / 'grid.log'}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
