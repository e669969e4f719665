"""Startup: how long `tuner --help` and `python -m tuner.run search_spaces/dpo.yaml --dry-run` take (best of N
fresh processes each), in this checkout and, side by side, in another one (e.g. the code before a change).

    python benchmarks/startup.py [--repeat 5 --against ../main]
    python benchmarks/startup.py --dry-run       # one process each: proves the benchmark runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, machine  # noqa: E402

# What the `tuner` console script runs (tuner.cli:main), and the default search's validation.
COMMANDS = {
    "tuner --help": ["-c", "import sys; from tuner.cli import main; sys.exit(main())", "--help"],
    "python -m tuner.run search_spaces/dpo.yaml --dry-run": ["-m", "tuner.run", "search_spaces/dpo.yaml",
                                                             "--dry-run"],
}


def run_once(checkout: Path, arguments: list[str]) -> float:
    """Wall time of one fresh process running `python ARGUMENTS` with `checkout`'s tuner."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *arguments], cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)},
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(arguments)} failed in {checkout} (exit {done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per command; the best counts")
    parser.add_argument("--against", type=Path, help="another checkout of tuner to time side by side")
    parser.add_argument("--dry-run", action="store_true", help="one process per command")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    print(machine())
    repeat = 1 if args.dry_run else args.repeat
    checkouts = {"this checkout": REPO}
    if args.against is not None:
        checkouts[str(args.against)] = args.against.resolve()
    times: dict[str, dict[str, list[float]]] = {label: {name: [] for name in COMMANDS} for label in checkouts}
    for _ in range(repeat):  # the checkouts alternate, so that a change in the machine's load falls on both
        for name, arguments in COMMANDS.items():
            for label, path in checkouts.items():
                times[label][name].append(run_once(path, arguments))
    figures = {label: {name: min(runs) for name, runs in by_name.items()} for label, by_name in times.items()}
    width = max(len(name) for name in COMMANDS)
    print(f"startup, best of {repeat} (s)".ljust(width + 2) + "".join(f"{label:>16}" for label in figures))
    for name in COMMANDS:
        print(f"  {name:<{width}}" + "".join(f"{figures[label][name]:>16.2f}" for label in figures))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
