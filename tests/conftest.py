"""Shared fixtures: a tiny random Llama built locally (no download) with the embedded model's tokenizer."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def embedded_model(tmp_path_factory) -> Path:
    """The real embedded-model conversion, once per test session, in the user's cache (reused across runs)."""
    from tuner.embedded import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, embedded_model) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def spec_path(name: str) -> Path:
    return REPO / "search_spaces" / name


PREF, MARGIN = "eval_pref_accuracy", "eval_rewards/margins"
# trial -> reports as (eval_pref_accuracy, eval_rewards/margins); "raise" ends the trial in an error
SCRIPTS = {
    # best pref 0.9 at step 1; its best margin (2.0, step 2) has its checkpoint evicted (Tune keeps the best by pref
    # and the latest)
    "evicted": [(0.9, 0.1), (0.6, 2.0), (0.5, 0.05)],
    "steady": [(0.7, 0.3), (0.85, 0.4)],
    # 0.8 twice: only one of the two checkpoints is kept, and the ranking must name that one's step
    "tied": [(0.5, 0.2), (0.8, 0.25), (0.8, 0.3)],
    # the best score of all, then a crash: listed, never ranked, never exported
    "crashed": [(1.0, 5.0), "raise"],
}


def scripted_trial(config):
    from ray import tune

    for step, report in enumerate(SCRIPTS[config["script"]], start=1):
        if report == "raise":
            raise RuntimeError("loss is NaN at step 2")
        pref, margin = report
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "none"}))
            Path(folder, "adapter_model.safetensors").write_text("weights")
            Path(folder, "step.json").write_text(json.dumps({"step": step}))
            tune.report({PREF: pref, MARGIN: margin, "eval_loss": 1.0 - pref, "step": step, "max_steps": 3},
                        checkpoint=tune.Checkpoint.from_directory(folder))


@pytest.fixture(scope="session")
def scripted_experiment(tmp_path_factory):
    """A real Tune folder whose trials report scripted metrics and checkpoints (see SCRIPTS)."""
    import ray
    from ray import tune

    from tuner.experiment import Experiment
    from tuner.spec import validate_spec

    spec = validate_spec({"search": {"metric": PREF, "num_samples": 4,
                                     "space": {"train.beta": {"type": "choice", "values": [0.1]}}},
                          "run": {"keep_checkpoints": 1}})
    root = tmp_path_factory.mktemp("results")
    experiment = Experiment.create(spec, root / "scripted")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tune.Tuner(
            scripted_trial,
            param_space={"script": tune.grid_search(list(SCRIPTS))},
            tune_config=tune.TuneConfig(max_concurrent_trials=2),
            run_config=tune.RunConfig(
                name="scripted", storage_path=str(root), verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=PREF,
                                                        checkpoint_score_order="max")),
        ).fit()
    finally:
        ray.shutdown()
    return Experiment.open(experiment.path)
