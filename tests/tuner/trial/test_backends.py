"""How the base model's passes outside the trials load it (tuner.trial.backends.PassRuntime): as the trials load
theirs, decided in the driver from the spec; unsloth's loader reached through a fake unsloth on this CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tuner.errors import UserError
from tuner.passes import tasks as model_passes
from tuner.spec import validate_spec
from tuner.trial import backends
from tuner.trial.backends import CPU_RUNTIME, PassRuntime

FAKE_UNSLOTH = Path(__file__).resolve().parents[2] / "fake_unsloth"


@pytest.fixture
def unsloth_installed(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: object() if name == "unsloth" else real(name, *rest))


@pytest.mark.parametrize(("raw", "installed", "expected"), [
    ({}, True, CPU_RUNTIME),  # no GPU for the trials: transformers in float32 on their CPUs
    ({"resources": {"gpu": 0.25}}, True, PassRuntime("unsloth", "cuda", "4bit")),
    ({"resources": {"gpu": 0.25}, "model": {"load_in_4bit": False}}, True, PassRuntime("unsloth", "cuda", "16bit")),
    ({"resources": {"gpu": 0.5}}, False, PassRuntime("hf", "cuda", "bfloat16")),  # auto without the gpu extra
    ({"resources": {"gpu": 1}, "model": {"backend": "hf"}}, True, PassRuntime("hf", "cuda", "bfloat16")),
    ({"model": {"backend": "unsloth"}}, True, PassRuntime("unsloth", "cuda", "4bit")),
])
def test_the_passes_load_the_base_as_the_trials_do(raw, installed, expected, monkeypatch, unsloth_installed):
    if not installed:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None)
    monkeypatch.setattr(backends, "cuda_available", lambda: False)  # the driver's own GPU does not matter
    assert backends.pass_runtime(validate_spec(raw)) == expected


def test_a_machine_that_cannot_load_the_runtime_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    backends.check_available(CPU_RUNTIME)
    with pytest.raises(UserError, match="unsloth, 4bit.*needs a CUDA GPU") as refused:
        backends.check_available(PassRuntime("unsloth", "cuda", "4bit"))
    assert "\n" not in str(refused.value)


def test_gpu_passes_run_as_ray_tasks_and_never_in_the_driver(monkeypatch):
    monkeypatch.setattr(model_passes, "ray_running", lambda: True)
    monkeypatch.delenv(model_passes.WHERE_VARIABLE, raising=False)
    assert model_passes.as_tasks(PassRuntime("unsloth", "cuda", "4bit"))
    assert model_passes.as_tasks(PassRuntime("hf", "cuda", "bfloat16"))
    monkeypatch.setattr(model_passes, "ray_running", lambda: False)  # analysis after the search: no Ray to ask
    assert not model_passes.as_tasks(PassRuntime("unsloth", "cuda", "4bit"))


def test_the_unsloth_runtime_loads_the_trials_base_through_unsloth(tiny_llama, tmp_path, monkeypatch):
    log = tmp_path / "unsloth.jsonl"
    monkeypatch.setenv("FAKE_UNSLOTH_LOG", str(log))
    monkeypatch.delenv("UNSLOTH_RETURN_LOGITS", raising=False)
    monkeypatch.syspath_prepend(str(FAKE_UNSLOTH))
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    import unsloth

    loaded = backends.load_base(str(tiny_llama), PassRuntime("unsloth", "cuda", "4bit"), 96)
    [call] = unsloth.read_log(log)
    assert call["call"] == "from_pretrained" and call["load_in_4bit"] and call["max_seq_length"] == 96
    assert call["return_logits"] == "1"  # the pass reads logits that unsloth's training forward leaves empty
    assert not loaded.model.training and loaded.tokenizer.pad_token is not None
    backends.load_base(str(tiny_llama), PassRuntime("unsloth", "cuda", "16bit"), 96)
    assert unsloth.read_log(log)[-1]["load_in_4bit"] is False
