"""Harness overhead: one DPO configuration as a bare TRL script vs as a 1-trial tuner search, same machine, same
steps, evals, hyperparameters and threads, and the same work on both sides: a reference pass, the base model's
held-out preference accuracy, TRL's eval plus the preference accuracy at every eval, the adapter saved at every
eval (benchmarks/bare_dpo.py does each the way a script would). Prints both wall times and their ratio (target:
tuner <= 1.10x bare).

    python benchmarks/harness_overhead.py [--steps 16 --eval-steps 8]
    python benchmarks/harness_overhead.py --dry-run       # a tiny random model: proves the benchmark runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, TINY_MODEL, build_model, machine, timed, tuner_command  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--eval-steps", type=int, default=8)
    parser.add_argument("--dry-run", action="store_true", help="a tiny random model, 4 steps, 4 eval pairs")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-harness-"))
    bare_extra, tuner_extra, data_overrides = [], [], []
    if args.dry_run:
        model = build_model(work / "model", TINY_MODEL)
        args.steps, args.eval_steps = 4, 2
        data_overrides = ["data.max_eval_rows=4"]
        bare_extra = ["--model", str(model), "--max-length", "64"]
        tuner_extra = [f"model.name={model}", "model.max_length=64", *data_overrides]
    from tuner.spec import load_spec

    # Both sides train and evaluate on the search's own split and eval pairs.
    data = load_spec(REPO / "search_spaces" / "dpo.yaml", data_overrides).data.model_dump(mode="json")
    bare = timed([sys.executable, str(REPO / "benchmarks" / "bare_dpo.py"), "--steps", str(args.steps),
                  "--eval-steps", str(args.eval_steps), "--beta", "0.1", "--learning-rate", "5e-5", "--lora-r", "8",
                  "--threads", "2", "--base-score", "--save-dir", str(work / "bare"), "--data", json.dumps(data),
                  *bare_extra],
                 work / "bare.log")
    tuner = timed(tuner_command("dpo.yaml", work, "one", "search.algorithm=random", "search.space={}",
                                "search.num_samples=1", "scheduler.type=none", "resources.cpu=2",
                                "search.test_top_k=0",  # the bare script scores no test split: equal work
                                f"train.max_steps={args.steps}", f"train.eval_steps={args.eval_steps}",
                                "train.beta=0.1", "train.learning_rate=5.0e-5", "lora.r=8", *tuner_extra),
                  work / "tuner.log")
    print(f"bare TRL script:   {bare:6.1f} s  (its reference pass, base score, evals + a preference-accuracy pass)")
    print(f"1-trial tuner run: {tuner:6.1f} s  (Ray start, data prep, reference pass with base score, trial, ranking)")
    print(f"ratio tuner/bare:  {tuner / bare:.2f}x  (target <= 1.10x)")
    print(f"logs: {work}")
    if args.out:
        args.out.write_text(json.dumps({"bare_s": bare, "tuner_s": tuner, "ratio": tuner / bare}, indent=2))


if __name__ == "__main__":
    main()
