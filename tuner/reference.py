"""DPO's reference log-probs, computed once per search instead of once per trial.

The reference is the frozen base model, so its log-probs of every train and eval pair depend only on the base
model, the data and the tokenization, never on beta, learning rate or LoRA rank. The driver tokenizes the pairs and
runs the reference once with TRL's own `precompute_ref_log_probs`, and saves the result (token ids plus
`ref_chosen_logps` / `ref_rejected_logps` columns) beside the prepared data; every DPO trial then trains with
`precompute_ref_log_probs=True` on those columns and runs no reference forward pass, in training or in eval.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tuner.spec import Spec

# TRL fields that change how pairs are tokenized or which reference is used: searching them would change the
# reference log-probs from trial to trial.
PER_TRIAL_FIELDS = {"max_length", "truncation_mode", "padding_free", "pad_to_multiple_of", "pad_token",
                    "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps", "model_init_kwargs"}


def why_not_shared(spec: Spec, backend: str) -> str | None:
    """None when the reference can be shared by every DPO trial of this search, else the reason it cannot."""
    if not spec.search.share_reference:
        return "search.share_reference is off"
    if "dpo" not in spec.searched_methods():
        return "no DPO trial"
    if backend != "hf":
        return f"the {backend} backend computes its own (quantized) reference in each trial"
    searched = [k for k in spec.search.space
                if k.startswith(("model.", "data.")) or k.removeprefix("train.") in PER_TRIAL_FIELDS]
    if searched:
        return f"searched keys change the tokenized pairs or the reference: {searched}"
    if spec.train.get("sync_ref_model"):
        return "train.sync_ref_model updates the reference during training"
    return None


def shared_trainer_class():
    from tuner.compat import dpo_classes

    _, DPOTrainer = dpo_classes()

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

    return SharedReferenceDPOTrainer


def precompute(spec: Spec, base, train, held_out, out_dir: Path) -> dict[str, int]:
    """Tokenize and run the reference (`base`, from backends.load_base) once in the driver, saving
    `out_dir/{train,eval}`."""
    from tuner import data
    from tuner.compat import dpo_classes
    from tuner.methods import training_args

    _, DPOTrainer = dpo_classes()
    if base.tokenizer.chat_template:
        train, held_out = data.as_conversation(train), data.as_conversation(held_out)
    dpo_spec = spec.model_copy(update={"method": "dpo"})
    with tempfile.TemporaryDirectory(prefix="tuner-reference-") as scratch:
        args = training_args(dpo_spec, scratch, on_gpu=False, precompute_reference=True)
        args.precompute_ref_batch_size = args.precompute_ref_batch_size or args.per_device_eval_batch_size
        trainer = DPOTrainer(model=base.model, args=args, train_dataset=train, eval_dataset=held_out,
                             processing_class=base.tokenizer)
        trainer.train_dataset.save_to_disk(str(out_dir / "train"))
        trainer.eval_dataset.save_to_disk(str(out_dir / "eval"))
        return {"train": len(trainer.train_dataset), "eval": len(trainer.eval_dataset)}
