"""Shared reference log-probs: the same 4-trial DPO search with the reference computed once per search vs in every
trial; prints total trial time, wall time and the saving (target: >= 20% less total trial time).

    python benchmarks/shared_reference.py [--trials 4 --steps 8]
"""

from __future__ import annotations

import sys
import argparse
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, timed, trial_seconds, tuner_command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-reference-"))
    common = [f"search.num_samples={args.trials}", "scheduler.type=none", f"train.max_steps={args.steps}"]
    figures = {}
    for shared in ("true", "false"):
        name = f"shared-{shared}"
        wall = timed(tuner_command("dpo.yaml", work, name, f"search.share_reference={shared}", *common),
                     work / f"{name}.log")
        figures[shared] = (trial_seconds(work / name), wall)
    (shared_trials, shared_wall), (own_trials, own_wall) = figures["true"], figures["false"]
    print(f"reference in every trial: trials {own_trials:6.1f} s in all, wall {own_wall:6.1f} s")
    print(f"reference once per search: trials {shared_trials:6.1f} s in all, wall {shared_wall:6.1f} s "
          f"(wall includes computing it once)")
    print(f"total trial time: {1 - shared_trials / own_trials:.0%} less (target >= 20%); "
          f"wall: {1 - shared_wall / own_wall:.0%} less")
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
