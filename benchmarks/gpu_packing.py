"""GPU packing: the same small search at 1, 2 and 4 trials per GPU (resources.gpu 1, 0.5, 0.25), unsloth backend.

Prints, per setting: trial-steps per second, wall time, per-trial fixed cost (load, compile, first eval beyond a
steady round), peak GPU memory per trial, and the throughput ratio to 1 trial per GPU.

    python benchmarks/gpu_packing.py                 # on a CUDA machine with the gpu extra: 1B-class random Llama
    python benchmarks/gpu_packing.py --dry-run       # on a CPU: tiny Llama, hf backend, 1 and 2 at a time
"""

from __future__ import annotations

import sys
import argparse
import json
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: put the repo root on the path, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from benchmarks.common import TINY_MODEL, build_model, machine, timed, tuner_command

# 1B-class Llama (as measured in shared/device: 1.07B parameters), random weights: nothing is downloaded.
GPU_MODEL = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, max_position_embeddings=2048)
def summarize(path: Path, wall: float) -> dict:
    from tuner.experiment.folder import Experiment

    history = Experiment.open(path).history
    rows = []
    for _, reports in history.groupby("trial_id"):
        reports = reports.sort_values("training_iteration")
        first, last = reports.iloc[0], reports.iloc[-1]
        rounds = len(reports)
        steady = (last["time_total_s"] - first["time_total_s"]) / (rounds - 1) if rounds > 1 else 0.0
        rows.append({"steps": last["step"], "fixed": first["time_total_s"] - steady,
                     "peak": reports.get("peak_gpu_memory_gib", pd.Series([float("nan")])).max()})
    trials = pd.DataFrame(rows)
    return {"wall_s": wall, "trial_steps_per_s": trials["steps"].sum() / wall,
            "fixed_cost_s": trials["fixed"].mean(), "peak_gib_per_trial": trials["peak"].max()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dry-run", action="store_true", help="CPU: tiny model, hf backend, 1 and 2 at a time")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-packing-"))
    if args.dry_run:
        model, per_gpu = build_model(work / "model", TINY_MODEL), [1, 2]
        trials, steps = args.trials or 2, args.steps or 4
        common = ["model.backend=hf", "model.max_length=64", "resources.gpu=0", "resources.cpu=1",
                  "data.max_eval_rows=8", "train.per_device_train_batch_size=2"]
    else:
        model, per_gpu = build_model(work / "model", GPU_MODEL), [1, 2, 4]
        trials, steps = args.trials or 8, args.steps or 24
        common = ["model.backend=auto", "model.max_length=512", "model.load_in_4bit=true", "resources.cpu=2",
                  "data.max_eval_rows=32", "train.per_device_train_batch_size=4"]
    results = {}
    for n in per_gpu:
        name = f"per-gpu-{n}"
        share = [] if args.dry_run else [f"resources.gpu={1 / n}"]
        wall = timed(tuner_command("dpo.yaml", work, name, f"model.name={model}", *common, *share,
                                   f"search.num_samples={trials}", f"search.max_concurrent_trials={n}",
                                   "scheduler.type=none", f"train.max_steps={steps}",
                                   f"train.eval_steps={max(1, steps // 4)}", "search.share_reference=false"),
                     work / f"{name}.log")
        results[n] = summarize(work / name, wall)
    base = results[per_gpu[0]]["trial_steps_per_s"]
    print(f"{'trials/GPU':>10} {'steps/s':>9} {'wall s':>8} {'fixed s/trial':>14} {'peak GiB/trial':>15} "
          f"{'ratio to 1':>10}")
    for n, r in results.items():
        print(f"{n:>10} {r['trial_steps_per_s']:>9.3f} {r['wall_s']:>8.1f} {r['fixed_cost_s']:>14.1f} "
              f"{r['peak_gib_per_trial']:>15.2f} {r['trial_steps_per_s'] / base:>9.2f}x")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
