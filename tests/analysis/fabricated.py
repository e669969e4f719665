"""Fabricated experiments: the `trials` and `history` frames analysis.load would build, without Ray."""

from __future__ import annotations

import math

import pandas as pd


def frames(curves: dict[str, list[float]], status: dict[str, str] | None = None, method: str = "dpo",
           metric: str = "eval_rewards/margins", betas: dict[str, float] | None = None):
    status = status or {}
    trials = pd.DataFrame([{
        "trial_id": trial_id, "status": status.get(trial_id, "finished"), "method": method,
        "beta": (betas or {}).get(trial_id, 0.1), "config/train.beta": (betas or {}).get(trial_id, 0.1),
        "error": "RuntimeError: boom" if status.get(trial_id) == "errored" else "",
    } for trial_id in curves])
    rows = []
    for trial_id, values in curves.items():
        for i, value in enumerate(values, start=1):
            rows.append({"trial_id": trial_id, "training_iteration": i, "step": 2 * i, metric: value,
                         "loss": 0.7 - 0.01 * i, "eval_loss": 0.69 - 0.01 * i + (0 if math.isfinite(value) else 1),
                         "eval_rewards/accuracies": 0.5 + 0.1 * i,
                         "timestamp": 1000 + 10 * i, "time_total_s": 10.0 * i})
    return trials, pd.DataFrame(rows)
