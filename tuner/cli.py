"""The `tuner` console script: `tuner run SPEC`, `tuner resume DIR`, `tuner analyze DIR`, `tuner export DIR`,
`tuner generations DIR`.

Each subcommand is the module CLI of the same job (`python -m tuner.run`, `python -m analysis`, ...) with the same
arguments, so the two spellings can never drift apart.
"""

from __future__ import annotations

import importlib
import sys

from tuner.errors import USER_ERROR

# subcommand -> (module whose main() runs it, arguments put first, what it does)
COMMANDS: dict[str, tuple[str, list[str], str]] = {
    "run": ("tuner.run", [], "start a search: tuner run SPEC [key=value ...] [--name NAME] [--dry-run]"),
    "resume": ("tuner.run", ["--resume"], "continue a stopped search: tuner resume RESULTS/NAME"),
    "analyze": ("analysis.__main__", [], "rank, plot and report: tuner analyze RESULTS/NAME [--metric M]"),
    "export": ("tuner.export", [], "write the best adapter: tuner export RESULTS/NAME --out DIR [--merge]"),
    "generations": ("analysis.generations", [], "base vs best answers: tuner generations RESULTS/NAME"),
}


def usage() -> str:
    lines = "\n".join(f"  {name:<12} {text}" for name, (_, _, text) in COMMANDS.items())
    return (f"usage: tuner COMMAND [ARGS ...]\n\ncommands:\n{lines}\n\n"
            f"example: tuner run search_spaces/dpo.yaml search.num_samples=2 train.max_steps=4\n"
            f"help on one command: tuner COMMAND --help")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(usage() + (f"\n\ntuner: unknown command {argv[0]!r}" if argv else ""), file=sys.stderr)
        return USER_ERROR
    module, first, _ = COMMANDS[argv[0]]
    return importlib.import_module(module).main([*first, *argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
