"""The default search's wall time on this machine, `python -m tuner.run search_spaces/dpo.yaml` as shipped, with
where it went: the driver's fixed cost before the first trial (imports, checks, data, Ray start), the reference pass,
the trials' set-up, train and eval time, and the end of the search (end-of-search scoring, the final table).
Targets: wall <= 420 s on 2 cores; driver fixed cost <= 15 s.

    python benchmarks/default_search.py [key=value ...]   # overrides, as tuner.run takes them
    python benchmarks/default_search.py --dry-run         # a tiny model, seconds: proves the benchmark runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (DRY_RUN, TINY_MODEL, build_model, machine, search_breakdown,  # noqa: E402
                               timed_search, tuner_command)

WALL_TARGET_S, FIXED_COST_TARGET_S = 420, 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of search_spaces/dpo.yaml")
    parser.add_argument("--dry-run", action="store_true", help="a tiny random model and a few steps")
    parser.add_argument("--out", type=Path, help="also write the breakdown as JSON here")
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-default-"))
    overrides = args.overrides
    if args.dry_run:
        overrides = [f"model.name={build_model(work / 'model', TINY_MODEL)}", *DRY_RUN, *overrides]
    wall, started, ended = timed_search(tuner_command("dpo.yaml", work, "default", *overrides), work / "default.log")
    breakdown = search_breakdown(work / "default", started, ended)
    print(f"\n{'default DPO search':<72} {'seconds':>8} {'of wall':>8}")
    for phase, seconds in breakdown.items():
        print(f"{phase:<72} {seconds:8.1f} {seconds / wall:8.0%}")
    fixed = breakdown["driver fixed cost (before the first trial, reference pass excluded)"]
    print(f"wall {wall:.0f} s ({wall / 60:.1f} min): {wall / WALL_TARGET_S:.2f}x the {WALL_TARGET_S} s target; "
          f"driver fixed cost {fixed:.1f} s: {fixed / FIXED_COST_TARGET_S:.2f}x the {FIXED_COST_TARGET_S} s target")
    print(f"log: {work / 'default.log'}")
    if args.out:
        args.out.write_text(json.dumps(breakdown, indent=2))


if __name__ == "__main__":
    main()
