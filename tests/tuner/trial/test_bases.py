from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.errors import UserError
from tuner.trial.bases import full_precision_base, quantized_folder, without_quantized_suffix

BNB_4BIT = {"quant_method": "bitsandbytes", "_load_in_4bit": True, "_load_in_8bit": False,
            "bnb_4bit_quant_type": "nf4"}


def model_folder(path: Path, quantization: dict | None = None) -> Path:
    """A model folder's config.json, with a quantization_config when given (no weights: the rule reads none)."""
    path.mkdir(parents=True)
    config = {"model_type": "llama", "hidden_size": 32}
    if quantization is not None:
        config["quantization_config"] = quantization
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(("trained_on", "full"), [
    ("unsloth/Llama-3.2-1B-Instruct-bnb-4bit", "unsloth/Llama-3.2-1B-Instruct"),
    ("unsloth/Qwen2.5-0.5B-Instruct-unsloth-bnb-4bit", "unsloth/Qwen2.5-0.5B-Instruct"),
    ("Unsloth/Qwen2.5-0.5B-Instruct-Unsloth-BNB-4Bit", "Unsloth/Qwen2.5-0.5B-Instruct"),  # any case; the rest kept
    ("someone/Mistral-7B-BNB-4BIT", "someone/Mistral-7B"),
    ("unsloth/Llama-3.2-1B-Instruct", "unsloth/Llama-3.2-1B-Instruct"),  # already full precision
    ("meta-llama/bnb-4bit-Llama", "meta-llama/bnb-4bit-Llama"),  # a suffix only at the end
    ("org/-bnb-4bit", "org/-bnb-4bit"),  # nothing would be left of the name
    ("/models/Llama-bnb-4bit", "/models/Llama-bnb-4bit"),  # a path, not a hub id: the folder's config decides
])
def test_hub_ids_of_pre_quantized_repos_map_to_the_full_precision_repo(trained_on, full):
    base = full_precision_base(trained_on)
    assert (base.trained_on, base.name, base.quantized_only) == (trained_on, full, False)
    assert base.changed is (full != trained_on)
    assert (f"trained on the 4-bit {trained_on}; its full-precision base is {full}" in base.note) is base.changed
    assert without_quantized_suffix(trained_on) == full


def test_a_local_quantized_folder_is_quantized_only(tmp_path):
    folder = model_folder(tmp_path / "Llama-3.2-1B-Instruct-bnb-4bit", BNB_4BIT)
    base = full_precision_base(str(folder))
    assert (base.name, base.quantized_only, base.changed) == (str(folder), True, False)
    assert "is quantized (bitsandbytes 4-bit)" in base.note and "--base" in base.note
    older = model_folder(tmp_path / "older", {"quant_method": "bitsandbytes", "load_in_4bit": True})
    assert quantized_folder(str(older)) == "bitsandbytes 4-bit"
    eight = model_folder(tmp_path / "eight", {"quant_method": "bitsandbytes", "load_in_8bit": True})
    assert full_precision_base(str(eight)).quantized_only and quantized_folder(str(eight)) == "bitsandbytes 8-bit"


def test_a_plain_local_folder_is_full_precision(tmp_path):
    plain = model_folder(tmp_path / "plain")
    # unsloth quantized it on the fly: the folder on disk is the full-precision base, nothing to rewrite
    assert full_precision_base(str(plain)) == full_precision_base(str(plain), None)
    assert (full_precision_base(str(plain)).name, full_precision_base(str(plain)).note) == (str(plain), "")
    not_4bit = model_folder(tmp_path / "not-4bit", {"quant_method": "bitsandbytes", "_load_in_4bit": False})
    assert not full_precision_base(str(not_4bit)).quantized_only
    assert not full_precision_base(str(tmp_path / "missing")).quantized_only
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("[1, 2]")
    assert quantized_folder(str(tmp_path / "broken")) is None


def test_a_relative_folder_shaped_like_a_hub_id_is_read_as_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_folder(tmp_path / "models" / "Qwen-bnb-4bit", BNB_4BIT)
    assert full_precision_base("models/Qwen-bnb-4bit").quantized_only


def test_base_named_explicitly_overrides_the_rule(tmp_path):
    quantized = model_folder(tmp_path / "quantized", BNB_4BIT)
    full = model_folder(tmp_path / "full")
    base = full_precision_base(str(quantized), str(full))
    assert (base.name, base.quantized_only, base.changed) == (str(full.resolve()), False, True)
    assert f"the full-precision base named with --base is {full.resolve()}" in base.note
    assert full_precision_base("unsloth/X-bnb-4bit", "meta-llama/X").name == "meta-llama/X"
    assert full_precision_base("org/model", "org/model").note == ""


@pytest.mark.parametrize(("given", "message"), [
    ("no/such/folder", "--base: no such folder, and not a hub id of the form org/name, got 'no/such/folder'"),
    ("unsloth/X-bnb-4bit", "--base: unsloth/X-bnb-4bit is a pre-quantized repo; point --base at the full-precision "
                           "model (e.g. unsloth/X)"),
])
def test_base_named_explicitly_must_be_a_full_precision_model(given, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        full_precision_base("org/model", given)


def test_base_named_explicitly_must_not_be_a_quantized_or_empty_folder(tmp_path):
    quantized = model_folder(tmp_path / "quantized", BNB_4BIT)
    with pytest.raises(UserError, match=r"--base: .*quantized is itself quantized \(bitsandbytes 4-bit\)"):
        full_precision_base("org/model", str(quantized))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="--base: .*empty has no config.json"):
        full_precision_base("org/model", str(tmp_path / "empty"))
