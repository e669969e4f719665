"""The one place that reports to Ray Tune: a TrainerCallback that, at every evaluation, sends TRL's eval metrics
(under TRL's own names), the training metrics logged since the previous evaluation, and a checkpoint holding the
LoRA adapter and tokenizer.

One report is one eval round, which is the unit ASHA's grace_period and max_t count in.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict

from transformers import TrainerCallback

from tuner import compat

# Training values that are a level, not a rate: the last one stands for the interval rather than the mean.
_LAST_VALUE_KEYS = {"learning_rate", "epoch"}


class TuneReportCallback(TrainerCallback):
    def __init__(self, tokenizer, extra_files: dict[str, str] | None = None, evaluators: list | None = None):
        self.tokenizer = tokenizer
        self.extra_files = extra_files or {}
        self.evaluators = evaluators or []  # callables model -> {metric: value}, run beside TRL's own eval
        self.last_reported_step = -1
        self._train_logs: dict[str, list[float]] = defaultdict(list)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or any(key.startswith("eval_") for key in logs) or "train_runtime" in logs:
            return
        for key, value in logs.items():
            if isinstance(value, (int, float)):
                self._train_logs[key].append(float(value))

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        result = self._train_summary()
        result.update({k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))})
        for evaluate in self.evaluators:
            result.update(evaluate(model))
        result.update(step=state.global_step, max_steps=state.max_steps, epoch=float(state.epoch or 0.0))
        self.last_reported_step = state.global_step
        with tempfile.TemporaryDirectory(prefix="tuner-ckpt-") as folder:
            model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
            for name, text in self.extra_files.items():
                with open(f"{folder}/{name}", "w") as handle:
                    handle.write(text)
            compat.tune_report()(result, checkpoint=compat.tune_checkpoint().from_directory(folder))

    def _train_summary(self) -> dict[str, float]:
        summary = {}
        for key, values in self._train_logs.items():
            summary[key] = values[-1] if key in _LAST_VALUE_KEYS else sum(values) / len(values)
        self._train_logs.clear()
        return summary
