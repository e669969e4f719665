"""TRL's trainers as tuner runs them: each method's trainer with the one-pass evaluation (tuner.trial.evaluation), the
DPOTrainer that takes the shared reference's tokenized pairs (tuner.trial.reference), and the driver's reference
pass that keeps the base model's per-pair scores.

Imports TRL and torch: imported only by the functions that build a trainer (tuner.trial.trainable.build_trainer,
tuner.trial.reference.reference_pass), never by `tuner --help` or `--dry-run`.
"""

from __future__ import annotations

from unittest import mock

import torch
from datasets import Value
from torch.utils.data import DataLoader

from tuner.evidence.quality import PairScores, pair_groups, pair_ids
from tuner.trial import logprobs, methods
from tuner.trial.compat import cpo_classes, dpo_classes, orpo_classes
from tuner.trial.evaluation import CPOEval, DPOEval, ORPOEval, PairEvaluation

_, DPOTrainer = dpo_classes()
_, ORPOTrainer = orpo_classes()
_, CPOTrainer = cpo_classes()


class SharedReferenceDPOTrainer(DPOTrainer):
    """A DPOTrainer whose datasets arrive tokenized, with the reference log-probs as columns."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "chosen_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if "ref_chosen_logps" in dataset.column_names:
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)


class _WithPairEvaluation:
    """Takes `pair_evaluation=` (what the one-pass evaluation shares with the trial's reporting callback)."""

    def __init__(self, *args, pair_evaluation: PairEvaluation | None = None, **kwargs):
        self.pair_evaluation = pair_evaluation or PairEvaluation()
        super().__init__(*args, **kwargs)


class EvaluatingDPOTrainer(_WithPairEvaluation, DPOEval, DPOTrainer):
    """TRL's DPOTrainer with the one-pass evaluation."""


class EvaluatingSharedReferenceDPOTrainer(_WithPairEvaluation, DPOEval, SharedReferenceDPOTrainer):
    """SharedReferenceDPOTrainer with the one-pass evaluation."""


class EvaluatingORPOTrainer(_WithPairEvaluation, ORPOEval, ORPOTrainer):
    """TRL's ORPOTrainer with the one-pass evaluation."""


class EvaluatingCPOTrainer(_WithPairEvaluation, CPOEval, CPOTrainer):
    """TRL's CPOTrainer (SimPO through its loss_type) with the pair evaluation."""


def trainer_class(method: str, shared_reference: bool = False):
    """TRL's trainer for `method` with the one-pass evaluation; constructed with `pair_evaluation=`. With
    `shared_reference` (DPO only), the trainer that takes the shared reference's tokenized pairs."""
    family = methods.get(method).family
    if family == "dpo":
        return EvaluatingSharedReferenceDPOTrainer if shared_reference else EvaluatingDPOTrainer
    if shared_reference:
        raise ValueError(f"only the DPO family shares a reference, got method {method!r}")
    return EvaluatingCPOTrainer if family == "cpo" else EvaluatingORPOTrainer


class ReferencePassDPOTrainer(DPOTrainer):
    """DPOTrainer's reference precompute, run through tuner.trial.logprobs' eval forward, keeping the per-pair sums
    and token counts (TRL keeps only its loss's columns) in `self.scores`."""

    def __init__(self, *args, **kwargs):
        import transformers.trainer

        self.scores: dict[str, PairScores] = {}
        # transformers refuses to build a Trainer on a quantized model without trainable adapters: the trials'
        # 4-bit base here, or a trial's adapter beside its 4-bit weights (tuner.evidence.scoring). That check is for
        # training; this pass never trains.
        with mock.patch.object(transformers.trainer, "validate_quantization_for_training", lambda model: None):
            super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        scores = PairScores(pairs=pair_ids(dataset), groups=pair_groups(dataset))
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False)
        fast = logprobs.supports(self.model)
        columns = {"ref_chosen_logps": [], "ref_rejected_logps": []}
        for batch in loader:
            batch = self._prepare_inputs(batch)
            calls = []
            with logprobs.recording_forward(self.model, calls, fast=fast):
                chosen, rejected = self.compute_ref_log_probs(self.model, batch)
            log_probs, mask = calls[0]
            sums, counts = log_probs.sum(1).chunk(2), mask.sum(1).chunk(2)  # rows are [chosen; rejected]
            scores.extend(sums[0].tolist(), sums[1].tolist(), counts[0].tolist(), counts[1].tolist())
            columns["ref_chosen_logps"].append(chosen.float().cpu())
            columns["ref_rejected_logps"].append(rejected.float().cpu())
        self.scores[name] = scores
        for column, values in columns.items():
            values = torch.cat(values).tolist() if values else []
            dataset = dataset.add_column(column, values, feature=Value("float32"))
        return dataset
