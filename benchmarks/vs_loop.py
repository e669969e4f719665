"""tuner vs the loop a user would write without it: the configurations of one tuner search (same seeds, steps and
eval cadence) run as bare TRL scripts one after another, each with its own reference pass (benchmarks/bare_dpo.py),
against the tuner search itself (one shared reference pass, ASHA, reused trial processes, trials side by side).
Both sides do the same work: train, evaluate, pick the winner on the eval pairs. The search's end-of-search test
scoring, which the loop has no counterpart for, is off here (search.test_top_k=0); default_search measures it.

Prints the wall time of each, whether both pick the same winner on eval_pref_accuracy, and the time to signal: the
wall time until every configuration has a first eval score. Targets: tuner >= 2.5x faster, the same winner, time
to signal >= 4x shorter. The loop runs after the search, on the same machine.

    python benchmarks/vs_loop.py [key=value ...]    # overrides of search_spaces/dpo.yaml, as tuner.run takes them
    python benchmarks/vs_loop.py --dry-run           # a tiny random model, a few steps: proves the benchmark runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (DRY_RUN, REPO, TINY_MODEL, build_model, machine, timed,  # noqa: E402
                               tuner_command)

SEARCHED = ("train.beta", "train.learning_rate", "lora.r", "lora.alpha")  # what bare_dpo.py takes
METRIC = "eval_pref_accuracy"


def loop_command(spec, out: Path, save_dir: Path) -> list[str]:
    """bare_dpo.py with a trial's spec (the search's settings with one configuration's sampled values)."""
    from tuner.spec import EMBEDDED_MODEL

    args = spec.trl_args()
    command = [sys.executable, str(REPO / "benchmarks" / "bare_dpo.py"), "--steps", str(args.max_steps),
               "--eval-steps", str(args.eval_steps), "--train-batch", str(args.per_device_train_batch_size),
               "--eval-batch", str(args.per_device_eval_batch_size), "--max-length", str(spec.model.max_length),
               "--seed", str(args.seed), "--beta", str(args.beta),
               "--learning-rate", str(args.learning_rate), "--lora-r", str(spec.lora.r),
               "--lora-alpha", str(spec.lora.alpha), "--out", str(out), "--save-dir", str(save_dir),
               "--data", json.dumps(spec.data.model_dump(mode="json"))]  # the search's own split and eval pairs
    if spec.model.name != EMBEDDED_MODEL:
        command += ["--model", spec.model.name]
    return command


def same_config(a: dict, b: dict) -> bool:
    return all(abs(float(a[k]) - float(b[k])) <= 1e-9 * max(1.0, abs(float(a[k]))) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of search_spaces/dpo.yaml")
    parser.add_argument("--dry-run", action="store_true", help="a tiny random model and a few steps")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    from tuner.experiment.folder import Experiment
    from tuner.spec import load_spec, with_sampled

    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-vs-loop-"))
    overrides = list(args.overrides)
    if args.dry_run:
        overrides = [f"model.name={build_model(work / 'model', TINY_MODEL)}", *DRY_RUN, *overrides]
    spec = load_spec(REPO / "search_spaces" / "dpo.yaml", overrides)
    unsupported = set(spec.search.space) - set(SEARCHED)
    if unsupported:
        sys.exit(f"vs_loop: the bare script takes only {sorted(SEARCHED)} as searched keys, got {sorted(unsupported)}")

    started = time.time()
    # Equal work: the loop scores no test split, so the search scores none either (default_search measures that).
    tuner_wall = timed(tuner_command("dpo.yaml", work, "search", *overrides, "search.test_top_k=0"),
                       work / "search.log")
    experiment = Experiment.open(work / "search")
    history = experiment.history
    first_reports = history.sort_values("training_iteration").groupby("trial_id").first()
    # A first report's wall-clock time: its trial's start plus the trial's time (Tune's `timestamp` is whole seconds).
    reported_at = first_reports["setup/started_at"] + first_reports["time_total_s"]
    tuner_signal = float(reported_at.max() - started)
    best = experiment.best()
    trials = experiment.trials.set_index("trial_id")
    configs = {trial_id: {k: row[f"config/{k}"] for k in spec.search.space} for trial_id, row in trials.iterrows()}
    tuner_scores = history.groupby("trial_id")[METRIC].max()

    loop_started, loop_scores, loop_first = time.time(), {}, {}
    for i, (trial_id, config) in enumerate(configs.items()):
        out = work / f"loop-{i}.jsonl"
        timed(loop_command(with_sampled(spec, config), out, work / f"loop-{i}"), work / f"loop-{i}.log")
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        loop_scores[trial_id] = max(r[METRIC] for r in rows)
        loop_first[trial_id] = min(r["time"] for r in rows) - loop_started
    loop_wall = time.time() - loop_started
    loop_signal = max(loop_first.values())
    top = max(loop_scores.values())
    loop_winners = [t for t, score in loop_scores.items() if score == top]
    same = best is not None and any(same_config(configs[t], configs[best.trial_id]) for t in loop_winners)

    print(f"\n{'trial':>10} " + " ".join(f"{k:>20}" for k in spec.search.space) +
          f" {'tuner status':>14} {'tuner best':>10} {'loop best':>10}")
    for trial_id, config in configs.items():
        print(f"{trial_id:>10} " + " ".join(f"{v:>20.4g}" for v in config.values()) +
              f" {trials.loc[trial_id, 'status']:>14} {tuner_scores.get(trial_id, float('nan')):>10.4f} "
              f"{loop_scores[trial_id]:>10.4f}")
    print(f"\nwall:           tuner {tuner_wall:7.1f} s, loop {loop_wall:7.1f} s: tuner "
          f"{loop_wall / tuner_wall:.2f}x faster (target >= 2.5x)")
    print(f"time to signal: tuner {tuner_signal:7.1f} s, loop {loop_signal:7.1f} s: "
          f"{loop_signal / tuner_signal:.2f}x shorter (target >= 4x; every configuration has a first eval score)")
    print(f"winner on {METRIC}: tuner {best.trial_id if best else None} ({best.score if best else float('nan'):.4f}), "
          f"loop {', '.join(loop_winners)} ({top:.4f}): {'same' if same else 'DIFFERENT'} "
          f"(loop ties count as the same)")
    print(f"logs: {work}")
    if args.out:
        args.out.write_text(json.dumps({
            "tuner_wall_s": tuner_wall, "loop_wall_s": loop_wall, "tuner_signal_s": tuner_signal,
            "loop_signal_s": loop_signal, "same_winner": same, "tuner_winner": best.trial_id if best else None,
            "loop_winners": loop_winners, "configurations": len(configs)}, indent=2))


if __name__ == "__main__":
    main()
