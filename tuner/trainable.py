"""One trial, top to bottom: the sampled spec, the backend, model and tokenizer, the prepared pairs, TRL's DPO or
ORPO trainer with LoRA, and evaluation every `train.eval_steps` steps reported to Tune by TuneReportCallback.
"""

from __future__ import annotations

import os
from typing import Any

from tuner.spec import Spec, to_yaml, validate_spec, with_sampled

# Tuner's defaults for TRL fields; a value in the spec's `train` section wins.
TRAIN_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,
    "eval_steps": 4,
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
    "save_only_model": True,
}
# Set for every trial, whatever the spec says (the spec rejects these keys with the reason).
TRAIN_FIXED: dict[str, Any] = {"eval_strategy": "steps", "save_strategy": "no", "report_to": "none"}


def training_args(spec: Spec, output_dir: str, on_gpu: bool):
    from tuner import methods

    fields = methods.config_fields(spec.method)
    kwargs = {k: v for k, v in TRAIN_DEFAULTS.items() if k in fields}
    # TRL defaults bf16 to True; on a CPU that is slower and lossier than float32.
    kwargs["bf16"] = on_gpu
    kwargs["max_length"] = spec.model.max_length
    kwargs.update(spec.train)
    kwargs.update(TRAIN_FIXED, output_dir=output_dir)
    return methods.config_class(spec.method)(**kwargs)


def run_trial(config: dict[str, Any], *, spec_dict: dict[str, Any], data_dir: str) -> None:
    """The Tune function trainable. `config` holds the sampled `dotted.key: value` pairs."""
    from ray import tune

    from tuner import backends, models

    spec = with_sampled(validate_spec(spec_dict), config)
    backend = backends.resolve_backend(spec.model.backend)
    model_path = models.resolve(spec.model.name)
    loaded = backends.load(backend, str(model_path), spec)  # first: unsloth must be imported before trl

    import torch

    from tuner import data, methods
    from tuner.reporting import TuneReportCallback

    if not backends.cuda_available():
        torch.set_num_threads(max(1, int(spec.resources.cpu)))
    train, held_out = data.load_prepared(data_dir)
    if loaded.tokenizer.chat_template:
        train, held_out = data.as_conversation(train), data.as_conversation(held_out)

    trial_dir = tune.get_context().get_trial_dir() or os.getcwd()
    args = training_args(spec, os.path.join(trial_dir, "trainer"), on_gpu=backends.cuda_available())
    reporter = TuneReportCallback(loaded.tokenizer, extra_files={"tuner_spec.yaml": to_yaml(spec)})
    trainer = methods.trainer_class(spec.method)(
        model=loaded.model,
        args=args,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
        callbacks=[reporter],
    )
    trainer.train()
    if reporter.last_reported_step != trainer.state.global_step:
        trainer.evaluate()  # the last steps were not a multiple of eval_steps: rank on the final adapter too
