"""The model passes outside the trials, side by side in one run of the default search (search_spaces/dpo.yaml):
today's order (the test scoring in series when the trials are done, no pass cache), the first search with the test
scoring in the shadow of the trials (tuner.passes.shadow) filling a fresh pass cache, and a second search on the
same model and data that reuses it (tuner.passes.cache). Prints each one's breakdown (driver, reference pass, trials,
end of the search), its time to the first trial and its wall time.
Targets (issue 28): the end of the first search <= 15% of its wall; the second search's first trial >= 2x sooner
than the first's. The embedded model is converted before any search starts, so no figure includes the conversion.

    python benchmarks/model_passes.py [key=value ...]   # overrides, as tuner.run takes them
    python benchmarks/model_passes.py --dry-run         # a tiny model, a minute: proves the benchmark runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (DRY_RUN, TINY_MODEL, build_model, machine, search_breakdown,  # noqa: E402
                               timed_search, tuner_command)

END_SHARE_TARGET, FIRST_TRIAL_SPEEDUP_TARGET = 0.15, 2.0
FIXED, REFERENCE = ("driver fixed cost (before the first trial, reference pass excluded)",
                    "reference pass (and the base model's eval scores)")
TRIALS, END = "trials, first start to last report (wall)", "end of search (base model and top trials scored on test, final table)"
# name -> (what it is, pass cache folder, environment)
RUNS = {
    "today": ("test scoring in series, no cache", "cache-today", {"TUNER_SHADOW_SCORING": "off"}),
    "first": ("in the shadow, fresh cache", "cache", {}),
    "second": ("in the shadow, cache reused", "cache", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of search_spaces/dpo.yaml")
    parser.add_argument("--dry-run", action="store_true", help="a tiny random model and a few steps")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-passes-"))
    if args.dry_run:
        model = build_model(work / "model", TINY_MODEL)
        overrides = [*DRY_RUN, *args.overrides]
    else:
        from tuner.trial.embedded import embedded_model_path

        model = embedded_model_path()  # converted now (in the user's cache), once: no search below pays for it
        overrides = args.overrides
    figures = {}
    for name, (_, cache, environment) in RUNS.items():
        # Each search reads its own $TUNER_CACHE (a fresh one for "today" and "first"); the model is named by its
        # folder, so no search converts the embedded model into one.
        os.environ.update(TUNER_CACHE=str(work / cache), **environment)
        try:
            wall, started, ended = timed_search(tuner_command("dpo.yaml", work, name, f"model.name={model}",
                                                              *overrides), work / f"{name}.log")
        finally:
            for variable in environment:
                os.environ.pop(variable, None)
        breakdown = search_breakdown(work / name, started, ended)
        figures[name] = {"wall": wall, "first_trial": breakdown[FIXED] + breakdown[REFERENCE],
                         "driver": breakdown[FIXED], "reference": breakdown[REFERENCE],
                         "trials": breakdown[TRIALS], "end": breakdown[END], "end_share": breakdown[END] / wall,
                         "reused": "reused from the cache" in (work / f"{name}.log").read_text()}
    rows = [("driver before the first trial (reference excluded), s", "driver"), ("reference pass, s", "reference"),
            ("time to the first trial, s", "first_trial"), ("trials, first start to last report, s", "trials"),
            ("end of the search (test scoring, report), s", "end"), ("wall, s", "wall")]
    print(f"\n{'':<48}" + "".join(f"{name:>12}" for name in RUNS))
    print(f"{'':<48}" + "".join(f"{'(' + str(i + 1) + ')':>12}" for i in range(len(RUNS))))
    for label, key in rows:
        print(f"{label:<48}" + "".join(f"{figures[name][key]:12.1f}" for name in RUNS))
    print(f"{'end of the search, share of wall':<48}" + "".join(f"{figures[name]['end_share']:12.0%}" for name in RUNS))
    print(f"{'reference reused from the cache':<48}" + "".join(f"{str(figures[name]['reused']):>12}" for name in RUNS))
    for i, (what, _, _) in enumerate(RUNS.values()):
        print(f"  ({i + 1}) {what}")
    first, second, today = figures["first"], figures["second"], figures["today"]
    speedup = first["first_trial"] / max(second["first_trial"], 1e-9)
    print(f"end of the first search: {first['end_share']:.0%} of its wall (target <= {END_SHARE_TARGET:.0%}; "
          f"today's order: {today['end_share']:.0%}); test scoring in the shadow vs in series: end "
          f"{first['end']:.1f} s vs {today['end']:.1f} s")
    print(f"second search: first trial {speedup:.1f}x sooner than the first search's (target >= "
          f"{FIRST_TRIAL_SPEEDUP_TARGET:g}x), wall {second['wall']:.0f} s vs {first['wall']:.0f} s")
    print(f"logs: {work}")
    if args.out:
        args.out.write_text(json.dumps({**figures, "first_trial_speedup": speedup}, indent=2))


if __name__ == "__main__":
    main()
