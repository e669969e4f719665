"""One eval round of the default search, the way tuner did it before (TRL's eval, then a second preference-accuracy
pass over the same pairs: benchmarks/bare_dpo.py's LegacyPreferenceAccuracy) vs tuner.trial.evaluation's one pass, on the
default search's eval pairs, model and trial settings (one torch thread, as a trial gets), after a few training
steps. Both run side by side in one process, repeated and interleaved. Prints both times, their ratio (target >= 2x),
how far each metric moved (target <= 1e-4), and the one pass under bf16 autocast (tuner uses it only where it is
faster and moves the metrics by at most 1e-3).

    python benchmarks/eval_round.py [--repeats 3] [--threads 1] [key=value ...]
    python benchmarks/eval_round.py --dry-run      # a tiny random model: proves the benchmark runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, TINY_MODEL, build_model, machine  # noqa: E402

TIMINGS = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_model_preparation_time"}


def timed_call(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def largest_difference(ours: dict, theirs: dict) -> tuple[float, str]:
    keys = [k for k in ours if k in theirs and k not in TIMINGS and isinstance(ours[k], (int, float))]
    return max(((abs(ours[k] - theirs[k]), k) for k in keys), default=(0.0, ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of search_spaces/dpo.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a default trial has 1 CPU)")
    parser.add_argument("--dry-run", action="store_true", help="a tiny random model, 4 eval pairs")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    import torch
    from transformers import PrinterCallback

    from benchmarks.bare_dpo import LegacyPreferenceAccuracy
    from tuner.trial import backends, models, reference
    from tuner.data import loading as data
    from tuner.trial.evaluation import PairEvaluation
    from tuner.evidence.quality import with_pair_ids
    from tuner.spec import load_spec
    from tuner.trial.trainable import build_trainer

    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-eval-round-"))
    overrides = ["train.max_steps=2", "train.eval_steps=2", *args.overrides]  # a few steps: the adapter has moved
    if args.dry_run:
        overrides = [f"model.name={build_model(work / 'model', TINY_MODEL)}", "model.max_length=64",
                     "data.max_eval_rows=4", *overrides]
        args.repeats = min(args.repeats, 2)
    spec = load_spec(REPO / "search_spaces" / "dpo.yaml", overrides)
    model_path, batch = models.resolve(spec.model.name), spec.eval_batch_size
    splits = data.load_pairs(spec.data)
    train, held_out = splits.train, splits.eval
    train, held_out = train.select(range(spec.rows_consumed())), with_pair_ids(held_out)
    base = backends.load_base(model_path)
    base_scores = reference.precompute(spec, base, train, held_out, work)
    shared_train, shared_eval = data.load_prepared(work)

    torch.set_num_threads(args.threads)
    loaded = backends.load("hf", model_path, spec)
    legacy = LegacyPreferenceAccuracy(loaded.tokenizer, held_out, spec.model.max_length, batch)
    pairs = PairEvaluation(base=base_scores)
    trainer = build_trainer(spec, loaded, shared_train, shared_eval, str(work / "trainer"), [], on_gpu=False,
                            shared_reference=True, pair_evaluation=pairs)
    trainer.remove_callback(PrinterCallback)  # the figures below, not a metrics dict per eval
    trainer.train()

    def today():
        pairs.fast = False  # TRL's own eval forward (entropy, token accuracy, every position through the head)
        metrics = trainer.evaluate()
        return {**metrics, "eval_pref_accuracy": legacy(trainer.model)}

    def one_pass():
        pairs.fast = True
        return trainer.evaluate()

    def one_pass_bf16():
        pairs.fast = True
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return trainer.evaluate()

    times = {"today": [], "one pass": [], "one pass, bf16 autocast": []}
    results = {}
    for _ in range(args.repeats):
        for name, run in zip(times, (today, one_pass, one_pass_bf16)):
            seconds, results[name] = timed_call(run)
            times[name].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    moved, moved_key = largest_difference(results["one pass"], results["today"])
    bf16_moved, bf16_key = largest_difference(results["one pass, bf16 autocast"], results["one pass"])
    rows = len(shared_eval)
    print(f"\none eval round: {rows} pairs, eval batch {batch}, {args.threads} torch thread(s), "
          f"median of {args.repeats}")
    for name, seconds in median.items():
        print(f"  {name:<26} {seconds:7.2f} s   {median['today'] / seconds:5.2f}x today")
    print(f"one pass vs today: {median['today'] / median['one pass']:.2f}x faster (target >= 2x); largest metric "
          f"difference {moved:.2e} ({moved_key or 'none'}; target <= 1e-4); eval_pref_accuracy "
          f"{results['one pass']['eval_pref_accuracy']:.4f} vs {results['today']['eval_pref_accuracy']:.4f}")
    use_bf16 = median["one pass, bf16 autocast"] < median["one pass"] and bf16_moved <= 1e-3
    print(f"bf16 autocast: {median['one pass'] / median['one pass, bf16 autocast']:.2f}x the fp32 one pass, moves "
          f"metrics by up to {bf16_moved:.2e} ({bf16_key}): {'worth using' if use_bf16 else 'not used'}")
    if args.out:
        args.out.write_text(json.dumps({"median_s": median, "speedup": median["today"] / median["one pass"],
                                        "largest_difference": moved, "bf16_largest_difference": bf16_moved,
                                        "bf16_worth_using": use_bf16, "pairs": rows}, indent=2))


if __name__ == "__main__":
    main()
