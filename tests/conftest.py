"""Shared fixtures: a tiny random Llama built locally (no download) with the embedded model's tokenizer."""

from __future__ import annotations

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
