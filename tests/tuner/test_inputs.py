"""Malformed inputs: each gives one message naming what is wrong, exit code 2, no traceback, no results folder."""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import spec_path
from tuner.run import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path, text):
    path.write_text(text)
    return path


CASES = {
    "unknown train field": (["train.bta=0.1"], "train.bta: not a field of TRL's DPOConfig (did you mean beta?)"),
    "zero samples": (["search.num_samples=0"], "search.num_samples: Input should be greater than 0, got 0"),
    "unknown method": (["method=ppo"], "method: Input should be 'dpo'"),
    "unknown section key": (["runn.name=x"], "runn: unknown key"),
    "reserved train field": (["train.output_dir=/tmp/x"], "train.output_dir: set by tuner"),
    "bounds reversed": (["search.space.train.beta.low=0.9"], "search.space.train.beta: low must be < high"),
    "empty choice": (["search.space.lora.r={type: choice, values: []}"], "choice needs a non-empty list"),
    "override without =": (["num_samples"], "override 'num_samples': expected key=value"),
    "missing model folder": (["model.name=/nonexistent/model"], "model.name: no such folder"),
    "hub id offline": (["model.name=nobody/no-such-model"], "model.name: cannot load the config of 'nobody/no-such-model'"),
    "missing data file": (["data.source=/nonexistent/pairs.jsonl"], "data.source: no such file"),
    "missing column": (["data.columns.prompt=question"], "data.columns: data.source 'bundled' has no column prompt='question'"),
    "unsupported data file": (["data.source={tmp}/afile"], "data.source: expected a .jsonl, .json, .parquet or .csv"),
    "hub dataset offline": (["data.source=nobody/no-such-dataset"], "data.source: 'nobody/no-such-dataset' is neither"),
    "unreachable object storage": (["run.storage_path=s3://bucket/results?endpoint_override=127.0.0.1:{port}&scheme=http"],
                                   "run.storage_path: cannot reach s3://bucket/results?endpoint_override=127.0.0.1:"),
    "storage under a file": (["run.storage_path={tmp}/afile/results"], "is a file, not a folder"),
    "bad ray address": (["--address", "not-an-address"], "--address: expected HOST:PORT"),
    "no ray at address": (["--address", "127.0.0.1:{port}"], "--address: no Ray head node answers at 127.0.0.1:"),
    "gpu fraction above 1": (["resources.gpu=1.5"], "resources.gpu: above 1 must be a whole number of GPUs"),
    "grid with optuna": (["search.space.lora.r={type: grid, values: [4, 8]}"], "grid values need search.algorithm"),
    "eval pairs truncated away": (["model.max_length=16"], "model.max_length: truncating to 16 tokens leaves no eval "
                                                           "pair with an answer to score"),
    "searched length truncates": (["search.space.model.max_length={type: choice, values: [16, 128]}"],
                                  "model.max_length: truncating to 16 tokens leaves no eval pair"),
    "more cpus than the machine": (["resources.cpu=4096"], "resources.cpu: each trial needs 4096 CPU(s), but this "
                                                           "machine has"),
    "gpu on a machine without": (["resources.gpu=0.25"], "resources.gpu: each trial needs 0.25 GPU, but this machine "
                                                         "has no GPU"),
    "wandb online without a key": (["run.wandb=online"], "run.wandb: 'online' needs a W&B API key"),
    "bad rows in the data": (["data.source={tmp}/bad.jsonl"], "has 1 bad row(s) of 3 (missing rejected: 1); first: "
                                                              "line 2 (missing rejected). Fix them, or set "
                                                              "data.drop_bad_rows: true"),
}


def isolate(tmp_path, monkeypatch):
    """No GPU, no W&B login: every case fails the same way on every machine."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_SETUP_API_KEY_HOOK", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def assert_one_line(err: str, message: str) -> None:
    """The problem is named on one line of stderr, and no traceback follows."""
    assert any(message in line for line in err.splitlines()), err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub and datasets read HF_HUB_OFFLINE once, at their first import, perhaps by an earlier test
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    isolate(tmp_path, monkeypatch)
    write(tmp_path / "afile", "")
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(3)]
    del rows[1]["rejected"]
    write(tmp_path / "bad.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    args, message = CASES[case]
    args = [a.replace("{tmp}", str(tmp_path)).replace("{port}", str(free_port())) for a in args]
    storage = tmp_path / "results"
    code = main([str(spec_path("dpo.yaml")), f"run.storage_path={storage}", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert_one_line(err, message)
    assert not storage.exists() and not (tmp_path / "afile" / "results").exists()


def test_spec_file_errors(tmp_path, capsys):
    assert main([str(write(tmp_path / "bad.yaml", "model: [unclosed\n"))]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main([str(write(tmp_path / "list.yaml", "- 1\n"))]) == 2
    assert "top level must be a mapping" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "no such spec file" in capsys.readouterr().err


def test_data_file_errors(tmp_path, capsys):
    broken = write(tmp_path / "broken.jsonl", '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{not json\n')
    assert main([str(spec_path("dpo.yaml")), f"data.source={broken}", f"run.storage_path={tmp_path / 'r'}"]) == 2
    assert "data.source: cannot read" in capsys.readouterr().err
    same = write(tmp_path / "same.jsonl", json.dumps({"prompt": "p", "chosen": "x", "rejected": "x"}) + "\n")
    assert main([str(spec_path("dpo.yaml")), f"data.source={same}", f"run.storage_path={tmp_path / 'r'}"]) == 2
    assert "has 1 bad row(s) of 1 (chosen == rejected: 1); first: line 1 (chosen == rejected)" in capsys.readouterr().err
    assert main([str(spec_path("dpo.yaml")), f"data.source={same}", f"run.storage_path={tmp_path / 'r'}",
                 "data.drop_bad_rows=true"]) == 2
    assert "has no usable pair: 1 bad row(s) of 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_existing_experiment_and_bad_resume(tmp_path, capsys):
    (tmp_path / "r" / "taken").mkdir(parents=True)
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={tmp_path / 'r'}", "--name", "taken"]) == 2
    assert "already exists; choose another --name, or continue it with --resume" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "r" / "taken")]) == 2
    assert "is not a tuner experiment folder that can be resumed" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        main([str(spec_path("dpo.yaml")), "data.source=/nonexistent.jsonl", "--debug"])


def test_a_literal_secret_is_refused_and_never_printed(tmp_path, capsys):
    # Before: accepted and printed as '***'; now a spec never holds a secret (it would be saved with the results).
    assert main([str(spec_path("dpo.yaml")), "train.hub_token=hf_SECRET123", "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "hf_SECRET123" not in captured.out + captured.err
    assert "train.hub_token: a secret is never written in a spec" in captured.err
    assert "set HF_TOKEN in the environment, or put the name of an environment variable holding it in " \
           "train.hub_token_env" in captured.err


def test_a_secret_reference_to_an_unset_variable_is_refused_before_anything_is_written(tmp_path, capsys,
                                                                                      monkeypatch):
    monkeypatch.delenv("TUNER_UNSET_VARIABLE", raising=False)
    assert main([str(spec_path("dpo.yaml")), "train.hub_token_env=TUNER_UNSET_VARIABLE",
                 f"run.storage_path={tmp_path / 'r'}"]) == 2
    assert ("train.hub_token_env: the environment variable TUNER_UNSET_VARIABLE is not set"
            in capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_wandb_without_the_package(tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    assert main([str(spec_path("dpo.yaml")), "run.wandb=offline", f"run.storage_path={tmp_path / 'r'}"]) == 2
    assert "run.wandb: 'offline' needs the wandb package" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_dpo_on_a_cpu_with_trl_1_15_is_refused_with_the_fix(tmp_path, capsys, monkeypatch):
    import torch
    import trl

    monkeypatch.setattr(trl, "__version__", "1.15.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([str(spec_path("dpo.yaml")), f"run.storage_path={tmp_path / 'r'}"]) == 2
    assert "DPO needs Triton, which needs a GPU; on a CPU install TRL 1.16" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_gpu_spec_on_a_machine_without_a_gpu_is_refused_instead_of_hanging(tmp_path, capsys, monkeypatch):
    isolate(tmp_path, monkeypatch)
    assert main([str(spec_path("dpo_gpu.yaml")), f"run.storage_path={tmp_path / 'r'}"]) == 2
    assert_one_line(capsys.readouterr().err, "resources.gpu: each trial needs 0.25 GPU, but this machine has no GPU; "
                                             "set resources.gpu: 0 to train on CPUs")
    assert not (tmp_path / "r").exists()
