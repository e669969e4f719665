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


def trial_seconds(path: Path) -> float:
    """Sum over trials of the time each spent in its trial process (Tune's time_total_s of its last report)."""
    from tuner.experiment import Experiment

    history = Experiment.open(path).history
    return float(history.groupby("trial_id")["time_total_s"].max().sum())
