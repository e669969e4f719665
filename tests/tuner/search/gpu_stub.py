"""Test only: a Ray worker on this CPU machine made to believe it holds a CUDA GPU, with the model and training step
replaced by a stub. Everything else in a trial is tuner's and Ray's own: Tune's scheduling of fractional GPUs,
`tuner.trial.trainable.run_trial`, `tuner.trial.device.set_up`'s GPU branch, the prepared data, the report to Tune, and the
out-of-memory handling.

Installed in every worker process of a test's Ray job with
`ray.init(runtime_env={"worker_process_setup_hook": "tests.tuner.search.gpu_stub.install"})`: trials run in separate
processes, so patching in the test process would not reach them.

Each trial appends what it saw to `<trial dir>/gpu_stub.jsonl`, one JSON object per event:
`memory_fraction` (the cap it asked torch for), `train_start` and `train_end` (wall-clock times, with
CUDA_VISIBLE_DEVICES and the compile-cache settings as the training step saw them).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RECORD_FILE = "gpu_stub.jsonl"
STARTED_DIR = "gpu_stub_started"  # in the experiment folder: one file per trial whose training step began
OOM_SEED = 13  # the trial whose train.seed is this runs out of CUDA memory in its training step
# A training step holds until every trial it expects to share the GPU with has started, so that overlapping trials
# overlap for certain whatever their start-up stagger on a loaded machine; trials that Tune ran one after the
# other wait this long, then finish without overlapping, and the test fails.
PEER_WAIT_S = 45.0


def install() -> None:
    import torch

    torch.cuda.is_available = lambda: True
    torch.cuda.set_per_process_memory_fraction = _record_memory_fraction
    torch.cuda.reset_peak_memory_stats = lambda device=None: None
    torch.cuda.max_memory_allocated = lambda device=None: 0

    from tuner.trial import backends, trainable

    backends.load = load_tokenizer_only
    trainable.build_trainer = StubTrainer


def _trial_dir() -> Path:
    from ray import tune

    return Path(tune.get_context().get_trial_dir())


def record(event: str, **fields) -> None:
    with (_trial_dir() / RECORD_FILE).open("a") as handle:
        handle.write(json.dumps({"event": event, "time": time.time(), "pid": os.getpid(), **fields}) + "\n")


def read_records(trial_dir: str | Path) -> list[dict]:
    path = Path(trial_dir) / RECORD_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _record_memory_fraction(fraction: float, device=None) -> None:
    record("memory_fraction", fraction=fraction)


def load_tokenizer_only(backend: str, model_path: str, spec):
    """backends.load without the model: the trial still needs the real tokenizer for its data and reporting."""
    from transformers import AutoTokenizer

    from tuner.trial.backends import Loaded, _with_pad_token

    return Loaded(model=None, tokenizer=_with_pad_token(AutoTokenizer.from_pretrained(model_path)),
                  peft_config=None)


class _State:
    global_step = 0


class StubTrainer:
    """Stands in for TRL's trainer (same arguments as tuner.trial.trainable.build_trainer): one training step that
    waits for its GPU peers, reports one eval round to Tune, or raises CUDA OOM in the trial whose seed is
    OOM_SEED."""

    def __init__(self, spec, loaded, train, held_out, output_dir, callbacks, on_gpu, shared_reference=False,
                 pair_evaluation=None):
        self.spec = spec
        self.on_gpu = on_gpu
        self.state = _State()

    def train(self, resume_from_checkpoint=None) -> None:
        import torch
        from ray import tune

        from tuner.trial import compat

        trial_dir = _trial_dir()
        record("train_start", cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), on_gpu=self.on_gpu,
               **{key: os.environ.get(key) for key in ("UNSLOTH_COMPILE_LOCATION", "TORCHINDUCTOR_CACHE_DIR",
                                                       "TRITON_CACHE_DIR")})
        started = trial_dir.parent / STARTED_DIR
        started.mkdir(exist_ok=True)
        (started / tune.get_context().get_trial_id()).touch()
        if self.spec.train.get("seed") == OOM_SEED:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (stub)")
        peers = self.spec.search.max_concurrent_trials
        deadline = time.time() + PEER_WAIT_S
        while len(list(started.iterdir())) < peers and time.time() < deadline:
            time.sleep(0.2)
        self.state.global_step = 1
        record("train_end")
        compat.tune_report()({self.spec.metric: 0.0, "step": 1, "max_steps": 1})

    def evaluate(self) -> None:
        pass  # train() has reported its one eval round
