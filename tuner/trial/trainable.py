"""One trial, top to bottom: the sampled spec, the backend, model and tokenizer, the prepared pairs, TRL's DPO or
ORPO trainer with LoRA, and evaluation every `train.eval_steps` steps reported to Tune by TuneReportCallback.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from tuner.console import errors_to_log
from tuner.spec import Spec, to_yaml, validate_spec, with_sampled
from tuner.trial import methods


def build_trainer(spec: Spec, loaded, train, held_out, output_dir: str, callbacks: list, on_gpu: bool,
                  shared_reference: bool = False, pair_evaluation=None):
    """TRL's trainer for the spec's method, evaluating in one forward pass (tuner.trial.evaluation); with
    `shared_reference`, `train`/`held_out` are the tokenized pairs with the reference log-probs that
    tuner.trial.reference computed once for the search."""
    from tuner.trial import trainers

    trainer_class = trainers.trainer_class(spec.method, shared_reference)
    return trainer_class(
        pair_evaluation=pair_evaluation,
        model=loaded.model,
        args=methods.training_args(spec, output_dir, on_gpu, precompute_reference=shared_reference,
                                   with_secrets=True),
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
        callbacks=callbacks,
    )


@errors_to_log
def run_trial(config: dict[str, Any], *, spec_dict: dict[str, Any], data: tuple, reference: tuple | None,
              cache_dir: str | None, log_root: str | None = None, verbose: bool = False,
              base_scores: dict | None = None) -> None:
    """The Tune function trainable. `config` holds the sampled `dotted.key: value` pairs; the rest comes from the
    experiment through Ray's object store (tuner.search.build.trainable): `data`, the prepared (train, eval) pairs;
    `reference`, the same tokenized with DPO's shared reference log-probs, None when each trial computes its own;
    `cache_dir`, compile caches shared by the experiment's trials (None: this node's own, under its temp folder);
    `log_root`, the experiment folder whose trial folders get each trial's `trial.log` (None: Ray's local one);
    `base_scores`, the base models' per-pair scores by model name (tuner.evidence.quality.PairScores), the drift
    reference of trials that have no reference of their own."""
    from ray import tune

    from tuner import console
    from tuner.trial import backends, device, models
    from tuner.experiment.trust import OWNER_ONLY_UMASK

    # Checkpoints and trainer files are written by this process; on a cluster it inherits `ray start`'s umask.
    os.umask(OWNER_ONLY_UMASK)
    clock = _PhaseClock()
    trial_dir = tune.get_context().get_trial_dir() or os.getcwd()
    if not verbose:  # trial_dir is Ray's local staging copy; the log belongs in the trial's folder of the experiment
        log_dir = os.path.join(log_root, os.path.basename(trial_dir.rstrip("/"))) if log_root else trial_dir
        console.trial_output_to_log(log_dir)  # first: whatever fails below is in the trial's log
    # Unsloth patches trl, transformers and peft as they are imported, and validating the spec imports trl (it
    # builds TRL's config): the device and the libraries come first, from the spec the driver validated.
    device.set_up(config.get("resources.cpu", spec_dict["resources"]["cpu"]),
                  config.get("resources.gpu", spec_dict["resources"]["gpu"]), trial_dir,
                  cache_dir or os.path.join(tempfile.gettempdir(), "tuner-compile-cache"))
    backend = backends.resolve_backend(config.get("model.backend", spec_dict["model"]["backend"]))
    backends.import_libraries(backend)
    spec = with_sampled(validate_spec(spec_dict), config)
    clock.lap("imports")
    loaded = backends.load(backend, models.resolve(spec.model.name), spec)
    clock.lap("model_load")

    import torch

    from tuner.data import loading as pairs
    from tuner.trial import evaluation
    from tuner.trial.reporting import TuneReportCallback

    on_gpu = backends.cuda_available()
    shared_reference = methods.get(spec.method).uses_reference and reference is not None
    raw_train, raw_eval = data
    if shared_reference:
        train, held_out = reference
    elif loaded.tokenizer.chat_template:
        train, held_out = pairs.as_conversation(raw_train), pairs.as_conversation(raw_eval)
    else:
        train, held_out = raw_train, raw_eval
    pair_evaluation = evaluation.PairEvaluation(
        fast=backend == "hf", keep_extras=evaluation.keeps_extra_metrics([spec.metric_for(spec.method)]),
        base=(base_scores or {}).get(spec.model.name), guard_groups=tuple(spec.search.guard_groups))
    clock.lap("data")

    reporter = TuneReportCallback(loaded.tokenizer, extra_files={"tuner_spec.yaml": to_yaml(spec)},
                                  pair_outcomes=pair_evaluation)
    trainer = build_trainer(spec, loaded, train, held_out, os.path.join(trial_dir, "trainer"), [reporter], on_gpu,
                            shared_reference, pair_evaluation)
    clock.lap("trainer")  # LoRA wrap (hf backend), tokenization, reference precompute when not shared
    # What the trial ran on, for the record (strings: never a metric to rank on).
    reporter.first_report_extras = {**clock.laps, "setup/backend": backend,
                                     "setup/reference": "shared" if shared_reference else "own"}
    resume_from = _resumable_checkpoint(reporter)
    try:
        trainer.train(resume_from_checkpoint=resume_from)
        if reporter.last_reported_step != trainer.state.global_step:
            trainer.evaluate()  # the last steps were not a multiple of eval_steps: rank on the final adapter too
    except torch.OutOfMemoryError as error:
        raise RuntimeError(device.out_of_memory_message(spec.resources.gpu, error)) from None


class _PhaseClock:
    """Seconds spent in each phase of a trial's set-up, reported with its first result (`setup/<phase>_s`), and
    when the set-up began on the wall clock (`setup/started_at`, Unix seconds: Tune's `timestamp` is whole seconds)."""

    def __init__(self):
        self.laps: dict[str, float] = {"setup/started_at": time.time()}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[f"setup/{phase}_s"] = now - self._last
        self._last = now


def _resumable_checkpoint(reporter) -> str | None:
    """The folder of the trial's last Tune checkpoint when Tune is resuming it (after --resume), else None."""
    import json

    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    try:
        folder = checkpoint.to_directory()  # a local copy, whatever the storage
    except FileNotFoundError:
        # Ray deletes an evicted checkpoint as soon as a newer one registers, but saves the experiment state only
        # every few seconds: a driver killed in between restores the trial from a checkpoint that is gone. The
        # newest one left in the trial's folder (the one that evicted it) continues the trial instead.
        folder = newest_resumable_checkpoint(tune.get_context().get_trial_dir())
        if folder is None:
            return None
    if not _has_resume_files(folder):
        return None  # a checkpoint without optimizer state: start the trial over
    with open(os.path.join(folder, "trainer_state.json")) as handle:
        reporter.last_reported_step = json.load(handle)["global_step"]  # reported before the interruption
    return folder


def _has_resume_files(folder: str) -> bool:
    from tuner.trial.reporting import RESUME_FILES

    return all(os.path.isfile(os.path.join(folder, name)) for name in RESUME_FILES)


def newest_resumable_checkpoint(trial_dir: str | None) -> str | None:
    """The trial's checkpoint folder with the most training steps that a Trainer can resume from, or None."""
    import json
    from pathlib import Path

    best, best_step = None, -1
    for folder in Path(trial_dir).glob("checkpoint_*") if trial_dir else []:
        if folder.is_dir() and _has_resume_files(str(folder)):
            step = json.loads((folder / "trainer_state.json").read_text()).get("global_step", -1)
            if step > best_step:
                best, best_step = str(folder), step
    return best
