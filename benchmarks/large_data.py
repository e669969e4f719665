"""A search on a preference set of the size people use: 60k pairs of realistic lengths in the
HuggingFaceH4/ultrafeedback_binarized shape (parquet; `prompt` text, `chosen`/`rejected` conversations that repeat
it, `messages`, `prompt_id`, `score_chosen`, `score_rejected`), written by the benchmark itself. Measures the time
from the start of `python -m tuner.run` to the first trial, the driver's peak memory, and what goes into Ray's
object store (the prepared pairs tune.with_parameters puts there once, for every trial).
Targets on 2 cores: first trial within 90 s of start, driver peak under 4 GB, no copy of the whole set per trial.

    python benchmarks/large_data.py [key=value ...]   # overrides, as tuner.run takes them
    python benchmarks/large_data.py --dry-run         # 600 pairs: proves the benchmark runs
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, TINY_MODEL, build_model, machine, tuner_command  # noqa: E402

FIRST_TRIAL_TARGET_S, PEAK_TARGET_GB = 90, 4.0
PAIRS, DRY_RUN_PAIRS = 60_000, 600
# UltraFeedback's lengths, roughly: prompts of a median ~100 tokens with a long tail, answers of ~250 (a word of
# this text is ~1.3 tokens).
PROMPT_WORDS, ANSWER_WORDS = (80, 0.8), (190, 0.5)  # lognormal median (words) and sigma
WORDS = ("the of and to in is that for it as with was on be by this are or from at an not have which but can all "
         "their more one has will its about so if would also there what when use time these some other than into "
         "make like data model answer question example first two people way because each how many then most "
         "only over such may after new should could number any where much through those part work well even "
         "code value function list string return error file system user result change problem step case order "
         "point need help set since still while same does right however different small large light water energy "
         "history science language health market city process design level power group study simple").split()


def lognormal_words(rng: random.Random, median: float, sigma: float, cap: int = 2000) -> int:
    return max(3, min(cap, int(rng.lognormvariate(0, sigma) * median)))


def text(rng: random.Random, words: int) -> str:
    chosen = rng.choices(WORDS, k=words)
    return " ".join(w if i % 14 else w.capitalize() for i, w in enumerate(chosen)) + "."


def write_set(path: Path, pairs: int, seed: int = 0) -> None:
    """The H4 shape, in parquet row groups of 5,000 pairs (a writer that never holds the whole set)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    writer = None
    for start in range(0, pairs, 5000):
        rows = []
        for i in range(start, min(pairs, start + 5000)):
            prompt = f"Question {i}: " + text(rng, lognormal_words(rng, *PROMPT_WORDS))
            answers = [text(rng, lognormal_words(rng, *ANSWER_WORDS)) for _ in range(2)]
            chosen, rejected = ([{"role": "user", "content": prompt}, {"role": "assistant", "content": a}]
                                for a in answers)
            rows.append({"prompt": prompt, "prompt_id": f"{i:08x}", "chosen": chosen, "rejected": rejected,
                         "messages": chosen, "score_chosen": 8.0, "score_rejected": 4.0})
        table = pa.Table.from_pylist(rows)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def run_watched(command: list[str], log: Path) -> tuple[float, float, float]:
    """Run the search, sampling the driver's resident memory every 0.1 s. Returns (start on the wall clock, wall
    seconds, peak resident bytes of the driver process)."""
    import psutil

    started = time.time()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        peak = [0]

        def watch():
            watched = psutil.Process(process.pid)
            while process.poll() is None:
                try:
                    peak[0] = max(peak[0], watched.memory_info().rss)
                except psutil.Error:
                    return
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        code = process.wait()
        watcher.join()
    if code != 0:
        sys.exit(f"{' '.join(command)} failed (exit {code}); see {log}")
    return started, time.time() - started, peak[0]


def object_store_bytes(path: Path) -> dict[str, int]:
    """What tune.with_parameters puts into Ray's object store: the prepared pairs as the driver loads them for it
    (tuner.search.build.trainable), pickled."""
    from tuner.data import loading as data
    from tuner.experiment.folder import Experiment

    experiment = Experiment.open(path)
    prepared = data.load_prepared(experiment.data_dir, in_memory=True)
    sizes = {"train pairs": len(prepared[0]), "eval pairs": len(prepared[1]),
             "pairs": len(pickle.dumps(prepared, protocol=5))}
    if experiment.shares_reference:
        reference = data.load_prepared(experiment.reference_dir, in_memory=True)
        sizes["shared reference"] = len(pickle.dumps(reference, protocol=5))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of search_spaces/dpo.yaml")
    parser.add_argument("--dry-run", action="store_true", help=f"{DRY_RUN_PAIRS} pairs instead of {PAIRS}")
    parser.add_argument("--pairs", type=int, help=f"pairs in the set (default {PAIRS})")
    parser.add_argument("--model", help="model.name (default: a tiny random Llama with the embedded tokenizer: the "
                                        "figures are the data's, not a model's)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-large-data-"))
    pairs = args.pairs or (DRY_RUN_PAIRS if args.dry_run else PAIRS)
    source = work / "ultrafeedback_shape.parquet"
    began = time.perf_counter()
    write_set(source, pairs)
    print(f"wrote {pairs} pairs in the H4 shape: {source} ({source.stat().st_size / 1e6:.0f} MB) in "
          f"{time.perf_counter() - began:.0f} s")
    model = args.model or str(build_model(work / "model", TINY_MODEL))
    # The one-trial search on the file (the bundled data's eval groups do not apply); the test split capped
    # as dpo.yaml caps the eval split (144 pairs), so that the end of the search does not score 12k test pairs.
    overrides = [f"model.name={model}", f"data.source={source}", "data.eval_groups=null", "search.num_samples=1",
                 "train.max_steps=2", "train.eval_steps=2", "data.max_test_rows=24", "model.max_length=1024",
                 *args.overrides]
    log = work / "search.log"
    started, wall, peak = run_watched(tuner_command("dpo.yaml", work, "large", *overrides), log)

    from tuner.experiment.folder import Experiment

    history = Experiment.open(work / "large").history
    first_trial = float(history["setup/started_at"].min()) - started
    store = object_store_bytes(work / "large")
    in_store = sum(v for k, v in store.items() if not k.endswith(" pairs"))
    figures = {"pairs": pairs, "source_mb": source.stat().st_size / 1e6, "first_trial_s": first_trial,
               "wall_s": wall, "driver_peak_gb": peak / 1e9, "object_store_mb": in_store / 1e6,
               "object_store": store}
    print(f"\nsearch on {pairs} pairs: `python -m tuner.run search_spaces/dpo.yaml {' '.join(overrides)}`")
    for line in Path(log).read_text().splitlines():
        if line.startswith(("data", "reference log-probs")):
            print(f"  {line}")
    print(f"first trial {first_trial:.1f} s after start: {first_trial / FIRST_TRIAL_TARGET_S:.2f}x the "
          f"{FIRST_TRIAL_TARGET_S} s target (wall {wall:.0f} s)")
    print(f"driver peak memory {peak / 1e9:.2f} GB: {peak / 1e9 / PEAK_TARGET_GB:.2f}x the {PEAK_TARGET_GB:g} GB "
          f"target")
    print(f"Ray's object store: {in_store / 1e6:.1f} MB, put once for every trial ({store['train pairs']} train and "
          f"{store['eval pairs']} eval pairs: the pairs trials consume"
          + (f"; shared reference {store['shared reference'] / 1e6:.1f} MB" if "shared reference" in store else "")
          + f"), vs {source.stat().st_size / 1e6:.0f} MB of source")
    print(f"log: {log}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
