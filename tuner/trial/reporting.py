"""The one place that reports to Ray Tune: a TrainerCallback that, at every evaluation, sends TRL's eval metrics
(under TRL's own names, with eval_pref_accuracy and eval_drift), the training metrics logged since the previous
evaluation, and a checkpoint holding the LoRA adapter and tokenizer, the eval's per-pair outcomes
(`pair_outcomes.json`), plus the optimizer, scheduler and trainer state that a resumed trial continues from.

One report is one eval round, which is the unit ASHA's grace_period and max_t count in.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import defaultdict

import ray
import torch
from transformers import TrainerCallback

from tuner.trial import compat, device
from tuner.evidence.quality import OUTCOMES_FILE

# Training values that are a level or a running total, not a rate: the last one stands for the interval rather than
# the mean (TRL's num_tokens counts every token trained on so far).
_LAST_VALUE_KEYS = {"learning_rate", "epoch", "num_tokens"}
# Logged losses that end the trial when they are NaN or infinite: nothing after a diverged step is worth training.
_LOSS_KEYS = ("loss",)


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; the trial ends as ERROR with this message."""


# The names transformers' Trainer.train(resume_from_checkpoint=...) reads.
RESUME_FILES = ("optimizer.pt", "scheduler.pt", "trainer_state.json")


class TuneReportCallback(TrainerCallback):
    def __init__(self, tokenizer, extra_files: dict[str, str] | None = None, pair_outcomes=None):
        self.tokenizer = tokenizer
        self.extra_files = extra_files or {}
        self.pair_outcomes = pair_outcomes  # tuner.trial.evaluation.PairEvaluation: the eval that just ran, per pair
        self.last_reported_step = -1
        self.first_report_extras: dict[str, float | str] = {}  # e.g. the trial's set-up times, sent once
        self._train_logs: dict[str, list[float]] = defaultdict(list)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or any(key.startswith("eval_") for key in logs) or "train_runtime" in logs:
            return
        for key in _LOSS_KEYS:
            value = logs.get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise DivergedError(f"training {key} is {value} at step {state.global_step}: the trial diverged "
                                    f"(lower train.learning_rate, or clip harder with a smaller train.max_grad_norm)")
        for key, value in logs.items():
            if isinstance(value, (int, float)):
                self._train_logs[key].append(float(value))

    def on_evaluate(self, args, state, control, metrics=None, model=None, optimizer=None, lr_scheduler=None,
                    **kwargs):
        result = self._train_summary()
        result.update({k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))})
        outcomes = self.pair_outcomes.outcomes() if self.pair_outcomes is not None else None
        peak = device.peak_memory_gib()
        if peak is not None:
            result["peak_gpu_memory_gib"] = peak
        result.update(step=state.global_step, max_steps=state.max_steps, epoch=float(state.epoch or 0.0),
                      node_id=ray.get_runtime_context().get_node_id())
        result.update(self.first_report_extras)
        self.first_report_extras = {}
        self.last_reported_step = state.global_step
        with tempfile.TemporaryDirectory(prefix="tuner-ckpt-") as folder:
            model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
            files = dict(self.extra_files)
            if outcomes is not None:
                files[OUTCOMES_FILE] = json.dumps(outcomes)
            for name, text in files.items():
                with open(f"{folder}/{name}", "w") as handle:
                    handle.write(text)
            if optimizer is not None and lr_scheduler is not None:
                torch.save(optimizer.state_dict(), os.path.join(folder, "optimizer.pt"))
                torch.save(lr_scheduler.state_dict(), os.path.join(folder, "scheduler.pt"))
                state.save_to_json(os.path.join(folder, "trainer_state.json"))
            compat.tune_report()(result, checkpoint=compat.tune_checkpoint().from_directory(folder))

    def _train_summary(self) -> dict[str, float]:
        summary = {}
        for key, values in self._train_logs.items():
            summary[key] = values[-1] if key in _LAST_VALUE_KEYS else sum(values) / len(values)
        self._train_logs.clear()
        return summary
