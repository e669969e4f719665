"""Every import whose location moves between the library versions tuner supports, in one place."""

from __future__ import annotations


def dpo_classes():
    from trl import DPOConfig, DPOTrainer

    return DPOConfig, DPOTrainer


def orpo_classes():
    # TRL 1.x moved ORPO to trl.experimental; older releases export it at the top level.
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError:  # pragma: no cover - older TRL
        from trl import ORPOConfig, ORPOTrainer
    return ORPOConfig, ORPOTrainer


def tune_report():
    # Ray 2.60 reports from a Tune function trainable through ray.tune.report, not ray.train.report.
    from ray.tune import report

    return report


def tune_checkpoint():
    from ray.tune import Checkpoint

    return Checkpoint
