"""Harness overhead: one DPO configuration as a bare TRL script vs as a 1-trial tuner search, same machine, same
steps, evals and hyperparameters; prints both wall times and their ratio (target: tuner <= 1.10x bare).

    python benchmarks/harness_overhead.py [--steps 16 --eval-steps 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, machine, timed, tuner_command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--eval-steps", type=int, default=8)
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-harness-"))
    bare = timed([sys.executable, str(REPO / "benchmarks" / "bare_dpo.py"), "--steps", str(args.steps),
                  "--eval-steps", str(args.eval_steps)], work / "bare.log")
    tuner = timed(tuner_command("dpo.yaml", work, "one", "search.algorithm=random", "search.space={}",
                                "search.num_samples=1", "scheduler.type=none", "resources.cpu=2",
                                f"train.max_steps={args.steps}", f"train.eval_steps={args.eval_steps}",
                                "train.beta=0.1", "train.learning_rate=5.0e-5"),
                  work / "tuner.log")
    print(f"bare TRL script:   {bare:6.1f} s")
    print(f"1-trial tuner run: {tuner:6.1f} s  (Ray start, data prep, shared reference, base eval, trial, ranking)")
    print(f"ratio tuner/bare:  {tuner / bare:.2f}x  (target <= 1.10x)")
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
