"""The default search's wall time on this machine: `python -m tuner.run search_spaces/dpo.yaml` as shipped
(target: <= 10 minutes on 2 cores).

    python benchmarks/default_search.py [key=value ...]   # overrides, as tuner.run takes them
    python benchmarks/default_search.py --dry-run         # a tiny model, seconds: proves the benchmark runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (DRY_RUN, TINY_MODEL, build_model, machine, timed, trial_seconds,  # noqa: E402
                               tuner_command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of search_spaces/dpo.yaml")
    parser.add_argument("--dry-run", action="store_true", help="a tiny random model and a few steps")
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-default-"))
    overrides = args.overrides
    if args.dry_run:
        overrides = [f"model.name={build_model(work / 'model', TINY_MODEL)}", *DRY_RUN, *overrides]
    wall = timed(tuner_command("dpo.yaml", work, "default", *overrides), work / "default.log")
    print(f"default DPO search: wall {wall:.0f} s ({wall / 60:.1f} min; target <= 10 min), "
          f"trial time {trial_seconds(work / 'default'):.0f} s in all; ratio to target {wall / 600:.2f}")
    print(f"log: {work / 'default.log'}")


if __name__ == "__main__":
    main()
