"""One policy forward pass per evaluation: TRL's eval metrics, the held-out preference accuracy with its per-pair
outcomes, and the drift from the reference all come from the forward pass TRL's eval runs anyway.

The trial's trainer is TRL's DPOTrainer / ORPOTrainer with the hooks below mixed in (tuner.trial.trainers):
- DPO: each eval batch's policy forward (and the reference forward, when the trial computes its own) is answered,
  on a CPU, by tuner.trial.logprobs (each prompt once, the LM head at answer tokens only), and recorded; TRL's loss and
  reward metrics are computed from it as usual. Entropy, token accuracy and mean logits over the eval answers are
  not computed (nobody ranks on them) unless the spec's metric is one of them; then TRL's own forward runs, still
  only once. On a CPU, training steps use the same forward with gradients (same loss and gradients as TRL's, about
  half the time: the prompt runs once per pair instead of twice, and TRL's CPU head projects every position); the
  training logs then lack the same four metrics.
- ORPO: the eval forward is answered, on a CPU, by tuner.trial.logprobs too: the chosen rows' log-probs at every
  position (ORPO's NLL term covers prompt and answer), the rejected rows' at the answer only (each prompt once); ORPO's
  loss and metrics are computed from them as TRL computes them, but for the mean logits over every position
  (`eval_logits/*`), which are not computed unless the spec ranks on them (then TRL's forward runs, recorded where
  ORPO turns logits into log-probs). Training steps keep TRL's forward. The answer's tokens are the same as DPO's
  (ORPO appends an EOS the chat template did not write; it is left out of the preference measures), so both
  methods and the base model are scored on the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tuner.trial import logprobs
from tuner.evidence.quality import PairScores, pair_groups, pair_ids

# TRL DPO's per-token eval metrics that take extra passes over the vocabulary at every answer position.
EXTRA_DPO_METRICS = ("entropy", "mean_token_accuracy", "logits/chosen", "logits/rejected")


def keeps_extra_metrics(metrics: list[str]) -> bool:
    """Whether ranking asks for one of EXTRA_DPO_METRICS (then the eval computes them)."""
    return any(m.removeprefix("eval_") in EXTRA_DPO_METRICS for m in metrics)


@dataclass
class PairEvaluation:
    """Shared by a trial's trainer and its reporting callback: how to evaluate, and the last evaluation's scores."""

    fast: bool = True  # tuner.trial.logprobs' forward (transformers backend); False: TRL's forward, recorded
    keep_extras: bool = False  # compute EXTRA_DPO_METRICS (the spec ranks on one)
    base: PairScores | None = None  # the base model's scores: the drift reference where the trainer has none
    guard_groups: tuple = ()  # search.guard_groups: compared with the reference, left out of eval_pref_accuracy
    latest: PairScores | None = None

    def outcomes(self) -> dict | None:
        return self.latest.outcomes(self.guard_groups) if self.latest is not None else None


class PairEval:
    """Per-pair scores of every eval batch, gathered into eval_pref_accuracy and eval_drift at the end."""

    pair_evaluation: PairEvaluation

    def get_eval_dataloader(self, eval_dataset=None):
        dataset = (self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else
                   eval_dataset if eval_dataset is not None else self.eval_dataset)
        # before Trainer drops the columns the model does not take
        self._eval_pairs, self._eval_groups = pair_ids(dataset), pair_groups(dataset)
        return super().get_eval_dataloader(eval_dataset)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        self._policy, self._reference = PairScores(), PairScores()
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        pairs, groups = getattr(self, "_eval_pairs", None), getattr(self, "_eval_groups", [])
        known = pairs is not None and len(pairs) == len(self._policy.chosen_logps)
        if not known:  # positions are not the data's pairs (eval pairs are sorted by prompt): nothing to match
            pairs, groups = list(range(len(self._policy.chosen_logps))), []
        self._policy.pairs = self._reference.pairs = pairs
        self._policy.groups = self._reference.groups = groups
        reference = (self._reference if len(self._reference.chosen_logps) == len(pairs) else
                     self.pair_evaluation.base if known else None)
        output.metrics.update(self._policy.metrics(reference, prefix=metric_key_prefix,
                                                   guard_groups=self.pair_evaluation.guard_groups))
        self.pair_evaluation.latest = self._policy
        return output


class DPOEval(PairEval):
    def _compute_loss(self, model, inputs, return_outputs):
        training = self.model.training
        unwrapped = self.accelerator.unwrap_model(model)
        base_model = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
        fast = (self.pair_evaluation.fast and not self.use_weighting and not self.aux_loss_enabled
                and logprobs.supports(base_model)
                and (self._fast_training(base_model) if training else not self.pair_evaluation.keep_extras))
        if training and not fast:
            return super()._compute_loss(model, inputs, return_outputs)
        calls: list = []
        with logprobs.recording_forward(unwrapped, calls, fast=fast):
            result = super()._compute_loss(model, inputs, return_outputs)
        if fast:  # their values above are placeholders, not measurements
            for key in EXTRA_DPO_METRICS:
                self._metrics["train" if training else "eval"].pop(key, None)
        if training:
            return result
        policy, mask = calls[0]
        chosen, rejected = policy.sum(1).chunk(2)  # rows are [chosen; rejected]
        counts = mask.sum(1).chunk(2)
        self._policy.extend(chosen.tolist(), rejected.tolist(), counts[0].tolist(), counts[1].tolist())
        if len(calls) > 1:  # the trial computed the reference itself, in this same eval step
            reference = calls[1][0].sum(1).chunk(2)
        elif self.precompute_ref_logps and self.ld_alpha is None:  # columns hold plain sums
            reference = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            return result
        self._reference.extend(reference[0].tolist(), reference[1].tolist(), counts[0].tolist(),
                               counts[1].tolist())
        return result

    def _fast_training(self, base_model) -> bool:
        """Training through tuner.trial.logprobs (which logprobs.supports keeps to CPUs) needs no gradient checkpointing
        (it turns the prompt's key/value cache off) and no dropout (one prompt pass would share its masks)."""
        return not self.args.gradient_checkpointing and self.args.disable_dropout


# ORPO's eval metrics that need the logits at every position: not computed by the fast eval.
ORPO_LOGIT_METRICS = ("logits/chosen", "logits/rejected")


class ORPOEval(PairEval):
    def tokenize_row(self, feature, model=None):
        """ORPO's tokenization, plus how many of each answer's tokens are the answer as the chat template wrote it
        (ORPO's labels add an EOS after it): the tokens the preference measures score."""
        row = super().tokenize_row(feature, model)
        if not self.is_encoder_decoder:
            for side in ("chosen", "rejected"):
                written = self.build_tokenized_answer(feature["prompt"], feature[side])["input_ids"]
                labelled = sum(label != -100 for label in row[f"{side}_labels"])
                row[f"pref_{side}_tokens"] = min(len(written), labelled)
        return row

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        self._eval_inputs = inputs
        try:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        finally:
            self._eval_inputs = None

    def get_batch_logps(self, logits, labels, average_log_prob=False, is_encoder_decoder=False):
        inputs = getattr(self, "_eval_inputs", None)
        if is_encoder_decoder or inputs is None or "pref_chosen_tokens" not in inputs:
            return super().get_batch_logps(logits, labels, average_log_prob, is_encoder_decoder)
        from trl.trainer.utils import selective_log_softmax

        # ORPO's own computation (trl ORPOTrainer.get_batch_logps), kept per token to score the pairs from it.
        labels, logits = labels[:, 1:].clone(), logits[:, :-1, :]
        mask = labels != -100
        per_token = selective_log_softmax(logits, torch.where(mask, labels, 0)) * mask
        sums = self._record_pairs(per_token, mask, inputs)
        return sums / mask.sum(-1) if average_log_prob else sums

    def _record_pairs(self, per_token: torch.Tensor, mask: torch.Tensor, inputs) -> torch.Tensor:
        """Each pair's scores from its rows' per-token answer log-probs ([chosen; rejected], zero off `mask`), over
        the answer's tokens as the chat template wrote them; returns each row's sum over `mask`."""
        counts = torch.tensor(list(inputs["pref_chosen_tokens"]) + list(inputs["pref_rejected_tokens"]),
                              device=mask.device)
        scored = mask & (mask.cumsum(-1) <= counts.unsqueeze(-1))
        chosen, rejected = (per_token * scored).sum(-1).chunk(2)
        chosen_tokens, rejected_tokens = scored.sum(-1).chunk(2)
        self._policy.extend(chosen.tolist(), rejected.tolist(), chosen_tokens.tolist(), rejected_tokens.tolist())
        return per_token.sum(-1)

    def concatenated_forward(self, model, batch):
        """In eval on a CPU, ORPO's forward from tuner.trial.logprobs (see the module docstring); else TRL's."""
        causal = self.accelerator.unwrap_model(model)
        causal = causal.get_base_model() if hasattr(causal, "get_base_model") else causal
        inputs = getattr(self, "_eval_inputs", None)
        self._fast_eval_ran = not (
            self.model.training or inputs is None or "pref_chosen_tokens" not in inputs or self.is_encoder_decoder
            or self.aux_loss_enabled or not self.pair_evaluation.fast or self.pair_evaluation.keep_extras
            or not logprobs.supports(causal))
        if not self._fast_eval_ran:
            return super().concatenated_forward(model, batch)
        batch = self.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=self.padding_value,
                                         device=self.accelerator.device)
        input_ids, attention, labels = (batch["concatenated_input_ids"], batch["concatenated_attention_mask"],
                                        batch["concatenated_labels"])
        chosen_rows = len(input_ids) // 2
        # ORPO's NLL: the chosen rows' every attended token after the first (TRL: CrossEntropyLoss, mean)
        every = torch.where(attention == 1, input_ids, -100)[:chosen_rows]
        chosen_every = logprobs.answer_log_probs(causal, input_ids[:chosen_rows], attention[:chosen_rows], every)
        nll_loss = -chosen_every.sum() / (every[:, 1:] != -100).sum().clamp(min=1)
        mask = labels[:, 1:] != -100
        rejected = logprobs.answer_log_probs(causal, input_ids[chosen_rows:], attention[chosen_rows:],
                                             labels[chosen_rows:])
        per_token = torch.cat([chosen_every * mask[:chosen_rows], rejected])
        all_logps = self._record_pairs(per_token, mask, inputs) / mask.sum(-1)  # average_log_prob=True
        no_logits = torch.zeros(1, device=input_ids.device)
        return all_logps[:chosen_rows], all_logps[chosen_rows:], no_logits, no_logits, nll_loss

    def store_metrics(self, metrics, train_eval="train"):
        if train_eval == "eval" and getattr(self, "_fast_eval_ran", False):  # placeholders, not measurements
            metrics = {k: v for k, v in metrics.items() if k.removeprefix("eval_") not in ORPO_LOGIT_METRICS}
        return super().store_metrics(metrics, train_eval)


class CPOEval(ORPOEval):
    """CPO's (and SimPO's) evaluation: TRL's own forward, recorded where CPO turns logits into log-probs (CPO
    shares ORPO's tokenization and get_batch_logps), so TRL's metrics are TRL's and the pairs are scored on the
    answer tokens as the chat template wrote them. ORPO's one-pass forward is not used: CPO's NLL covers the
    answer only, and SimPO's log-probs are length-normalised."""

    def concatenated_forward(self, model, batch):
        self._fast_eval_ran = False
        return super(ORPOEval, self).concatenated_forward(model, batch)

