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
