"""A trial process's share of the machine: torch threads on a CPU; on a shared GPU, a memory cap at the trial's
fraction and compile caches that concurrent trials neither race on nor rebuild.

Called first in a trial, before unsloth (which reads UNSLOTH_COMPILE_LOCATION at import) is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

# Headroom under the trial's share: the CUDA context and allocator fragmentation live outside the capped pool.
MEMORY_HEADROOM = 0.9


def set_up(cpus: float, gpu_share: float, trial_dir: str, cache_root: str) -> dict[str, str]:
    """Configure this process; returns the environment it set, for the record."""
    import torch

    settings: dict[str, str] = {}
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(cpus)))
        return settings
    # Unsloth writes its compiled modules into one folder; two trials writing one folder at once race, so each
    # trial gets its own. Inductor's and Triton's caches lock and rename atomically: shared, every trial after
    # the first reuses the kernels the first one compiled.
    settings["UNSLOTH_COMPILE_LOCATION"] = str(Path(trial_dir) / "unsloth_compiled_cache")
    settings["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_root) / "inductor")
    settings["TRITON_CACHE_DIR"] = str(Path(cache_root) / "triton")
    for key, value in settings.items():
        os.environ.setdefault(key, value)
    if 0 < gpu_share < 1:
        torch.cuda.set_per_process_memory_fraction(gpu_share * MEMORY_HEADROOM)
    torch.cuda.reset_peak_memory_stats()  # a reused trial process reports this trial's peak, not an earlier one's
    return settings


def peak_memory_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def out_of_memory_message(gpu_share: float, error: BaseException) -> str:
    cap = f"capped at {gpu_share * MEMORY_HEADROOM:.0%} of the GPU (resources.gpu={gpu_share:g})" if gpu_share < 1 \
        else "using the whole GPU"
    return (f"CUDA out of memory in a trial {cap}: lower train.per_device_train_batch_size or model.max_length, "
            f"or give each trial a larger resources.gpu ({str(error).splitlines()[0] if str(error) else ''})")
