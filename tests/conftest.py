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
    from tuner.trial.embedded import embedded_model_path

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


@pytest.fixture(autouse=True)
def ray_starts_after_the_checks(monkeypatch):
    """In-process runs start their Ray once every check passed, whatever this process imported before: a test's
    input error never starts one. A command-line run (a fresh process) starts it during the checks; tests that
    run `python -m tuner.run`, and tests/tuner/test_run_cli.py's `early_ray`, cover that."""
    from tuner import run

    monkeypatch.setattr(run, "_checks_will_import_trl", lambda: False)


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


def run_scripted_search(storage_path: str, cache: Path, reader_cache: Path, patch: pytest.MonkeyPatch):
    """A real Tune search of the SCRIPTS trials stored at `storage_path` (a folder or a URI), opened afterwards as
    from another machine: `patch` leaves TUNER_CACHE at `reader_cache` until the caller undoes it."""
    import ray
    from ray import tune

    from tuner.experiment.checks import check_storage
    from tuner.experiment.folder import Experiment
    from tuner.spec import validate_spec

    spec = validate_spec({"search": {"metric": PREF, "num_samples": 4,
                                     "space": {"train.beta": {"type": "choice", "values": [0.1]}}},
                          "run": {"keep_checkpoints": 1}})
    patch.setenv("TUNER_CACHE", str(cache))
    location = check_storage(storage_path, "scripted")
    Experiment.create(spec, location)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tune.Tuner(
            scripted_trial,
            param_space={"script": tune.grid_search(list(SCRIPTS))},
            tune_config=tune.TuneConfig(max_concurrent_trials=2),
            run_config=tune.RunConfig(
                name="scripted", storage_path=location.parent.uri, verbose=0,  # a URI as Ray Tune takes it
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=PREF,
                                                        checkpoint_score_order="max")),
        ).fit()
    finally:
        ray.shutdown()
    patch.setenv("TUNER_CACHE", str(reader_cache))
    return Experiment.open(location.uri)


@pytest.fixture(scope="session")
def scripted_experiment(tmp_path_factory):
    """A real Tune folder whose trials report scripted metrics and checkpoints (see SCRIPTS)."""
    with pytest.MonkeyPatch.context() as patch:  # TUNER_CACHE restored before any other test runs
        experiment = run_scripted_search(str(tmp_path_factory.mktemp("results")), tmp_path_factory.mktemp("driver"),
                                         tmp_path_factory.mktemp("reader"), patch)
    yield experiment


class S3Server:
    """moto's S3-compatible HTTP server on 127.0.0.1, as Ray's own storage tests use it."""

    def __init__(self, port: int):
        self.endpoint = f"127.0.0.1:{port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=f"http://{self.endpoint}")

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def uri(self, bucket: str, prefix: str = "") -> str:
        """What a user writes in run.storage_path for this server."""
        return f"s3://{bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="session")
def s3_server():
    """One server for the session; dummy credentials in this process's environment, so that pyarrow here, Ray's
    workers and subprocesses (which inherit it) all sign their requests the same way."""
    import logging
    import os
    import socket

    from moto.server import ThreadedMotoServer

    saved = {key: os.environ.get(key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                                  "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(port)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
