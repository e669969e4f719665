"""The default search's wall time on this machine: `python -m tuner.run search_spaces/dpo.yaml` as shipped
(target: <= 10 minutes on 2 cores).

    python benchmarks/default_search.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks.common import machine, timed, trial_seconds, tuner_command


def main() -> None:
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-default-"))
    wall = timed(tuner_command("dpo.yaml", work, "default", *sys.argv[1:]), work / "default.log")
    print(f"default DPO search: wall {wall:.0f} s ({wall / 60:.1f} min; target <= 10 min), "
          f"trial time {trial_seconds(work / 'default'):.0f} s in all; ratio to target {wall / 600:.2f}")
    print(f"log: {work / 'default.log'}")


if __name__ == "__main__":
    main()
