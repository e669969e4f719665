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


def cpo_classes():
    # CPO (and SimPO through its loss_type) lives in trl.experimental in TRL 1.x.
    try:
        from trl.experimental.cpo import CPOConfig, CPOTrainer
    except ImportError:  # pragma: no cover - older TRL
        from trl import CPOConfig, CPOTrainer
    return CPOConfig, CPOTrainer


def tune_report():
    # Ray 2.60 reports from a Tune function trainable through ray.tune.report, not ray.train.report.
    from ray.tune import report

    return report


def tune_checkpoint():
    from ray.tune import Checkpoint

    return Checkpoint


def dpo_unavailable_reason() -> str | None:
    """Why TRL's DPO cannot train on this machine, or None. TRL 1.15's DPO runs its fused LM head through a Triton
    kernel even on a CPU, where Triton is absent; 1.16 falls back to PyTorch."""
    import torch
    import trl

    if trl.__version__.startswith("1.15") and not torch.cuda.is_available():
        return (f"method: TRL {trl.__version__}'s DPO needs Triton, which needs a GPU; on a CPU install TRL 1.16: "
                f"pip install 'trl>=1.16,<1.17' (ORPO runs on either)")
    return None
