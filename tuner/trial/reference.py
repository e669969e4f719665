"""DPO's reference log-probs, computed once per search instead of once per trial, and the base model's scores.

The reference is the frozen base model, so its log-probs of every train and eval pair depend only on the base
model, the data and the tokenization, never on beta, learning rate or LoRA rank. One pass (tuner.passes.tasks: a Ray
task with a trial's resources, or the driver of a search on one CPU machine) tokenizes the pairs and runs the
reference once, loaded as the trials load their base (tuner.trial.backends.pass_runtime: unsloth's 4-bit base on a
GPU), through TRL's own `precompute_ref_log_probs` (with tuner.trial.logprobs' forward on a CPU: each prompt once,
the LM head at answer tokens only), and saves the result (token ids plus `ref_chosen_logps` /
`ref_rejected_logps` columns) beside the prepared data; every DPO trial then trains with
`precompute_ref_log_probs=True` on those columns and runs no reference forward pass, in training or in eval.

The same pass is the base model's score: the reference log-probs ARE the base model's log-probs, so its held-out
preference accuracy and per-pair outcomes (tuner.evidence.quality.PairScores) come from it, never from a second pass
(`base_scores` runs it on eval or test pairs alone when no reference is shared).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tuner.spec import Spec
from tuner.trial import methods

# TRL fields that change how pairs are tokenized or which reference is used: searching them would change the
# reference log-probs from trial to trial.
PER_TRIAL_FIELDS = {"max_length", "truncation_mode", "padding_free", "pad_to_multiple_of", "pad_token",
                    "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps", "model_init_kwargs",
                    # `ld_alpha` weighs the tail of the longer answer in the reference log-prob itself;
                    # `disable_dropout`, `trust_remote_code`, `use_liger_kernel` change the reference's forward
                    # pass. Loss fields (`loss_type`, `beta`, ...) only combine the log-probs afterwards.
                    "ld_alpha", "disable_dropout", "trust_remote_code", "use_liger_kernel"}


def why_not_shared(spec: Spec) -> str | None:
    """None when the reference can be shared by every DPO trial of this search, else the reason it cannot. Any
    backend: the pass loads the base model as the trials do (tuner.trial.backends.pass_runtime), on unsloth in 4
    bits on the trials' GPU share."""
    if not spec.search.share_reference:
        return "search.share_reference is off"
    if not any(methods.get(m).uses_reference for m in spec.searched_methods()):
        return "no trial against a reference (DPO, IPO)"
    searched = [k for k in spec.search.space if (key := methods.scoped(k)[1]).startswith(("model.", "data."))
                or key.removeprefix("train.") in PER_TRIAL_FIELDS]
    if searched:
        return f"searched keys change the tokenized pairs or the reference: {searched}"
    if spec.train.get("sync_ref_model"):
        return "train.sync_ref_model updates the reference during training"
    return None


def reference_pass(spec: Spec, base, datasets: dict) -> dict[str, tuple]:
    """Tokenize each dataset as TRL's DPOTrainer does and run the base model (`base`, from backends.load_base) over
    it once. Returns, per name, the tokenized pairs with TRL's `ref_chosen_logps` / `ref_rejected_logps` columns and
    the base model's PairScores on them (the reference log-probs ARE the base model's log-probs)."""
    from transformers import IntervalStrategy

    from tuner.data import loading as data
    from tuner.trial.methods import training_args
    from tuner.trial.trainers import ReferencePassDPOTrainer

    if base.tokenizer.chat_template:
        datasets = {name: data.as_conversation(d) for name, d in datasets.items()}
    names = sorted(datasets, key=lambda name: name != "train")  # TRL calls its first dataset "train"
    dpo_spec = spec.model_copy(update={"method": "dpo"})
    with tempfile.TemporaryDirectory(prefix="tuner-reference-") as scratch:
        import torch

        # On the GPU the pass's runtime put it on: TRL's bf16 autocast, as in the trials.
        on_gpu = next(base.model.parameters()).device.type == "cuda" and torch.cuda.is_bf16_supported()
        args = training_args(dpo_spec, scratch, on_gpu=on_gpu, precompute_reference=True)
        args.gradient_checkpointing = False  # a pass without gradients
        args.precompute_ref_batch_size = args.precompute_ref_batch_size or args.per_device_eval_batch_size
        args.eval_strategy = IntervalStrategy.NO  # a pass over the data, not a training run
        others = {name: datasets[name] for name in names[1:]}
        trainer = ReferencePassDPOTrainer(model=base.model, args=args, train_dataset=datasets[names[0]],
                                          eval_dataset=others or None, processing_class=base.tokenizer)
        tokenized = {names[0]: trainer.train_dataset, **(trainer.eval_dataset or {})}
        scores = {names[0]: trainer.scores["train"], **{name: trainer.scores[name] for name in names[1:]}}
    return {name: (tokenized[name], scores[name]) for name in names}


def precompute(spec: Spec, base, train, held_out, out_dir: Path):
    """The shared reference: one pass over the train and eval pairs, saved as `out_dir/{train,eval}`.
    Returns the base model's PairScores on the eval pairs, from the same pass."""
    done = reference_pass(spec, base, {"train": train, "eval": held_out})
    for name in ("train", "eval"):
        done[name][0].save_to_disk(str(out_dir / name))
    return done["eval"][1]


def base_scores(spec: Spec, base, dataset):
    """The base model's PairScores on `dataset` (eval or test pairs): one reference pass over it."""
    return reference_pass(spec, base, {"eval": dataset})["eval"][1]
