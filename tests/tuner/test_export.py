from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tuner.experiment.folder import Experiment
from tests.analysis.fabricated import frames
from tuner.export import ExportError, choose, export, main


def test_export_refuses_when_no_trial_has_a_finite_metric(tmp_path):
    trials, history = frames({"a": [math.nan], "b": [0.3]}, status={"b": "errored"})
    experiment = Experiment(tmp_path, trials=trials, history=history)
    with pytest.raises(ExportError, match="no trial reported a finite eval_rewards/margins"):
        choose(experiment, None, "eval_rewards/margins", "max")
    with pytest.raises(ExportError, match="--trial zz: no such trial"):
        choose(experiment, "zz", "eval_rewards/margins", "max")
    with pytest.raises(ExportError, match="has no trials"):
        choose(Experiment(tmp_path, trials=trials.iloc[0:0], history=history), None, "x", "max")


def tune_folder(root: Path) -> Path:
    """A Tune experiment folder with one finished trial whose one report kept its checkpoint (an adapter)."""
    folder = root / "exp"
    trial = {"trial_id": "t1", "status": "TERMINATED", "config": {"train.beta": 0.1}, "relative_logdir": "trial_t1"}
    metadata = {"last_result": {"step": 2}, "error_filename": None}
    folder.mkdir(parents=True)
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [[json.dumps(trial), json.dumps(metadata)]]}))
    checkpoint = folder / "trial_t1" / "checkpoint_000000"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "base"}))
    (checkpoint / "adapter_model.safetensors").write_text("weights")
    (folder / "trial_t1" / "result.json").write_text(json.dumps(
        {"eval_rewards/margins": 0.5, "step": 2, "max_steps": 2, "training_iteration": 1,
         "checkpoint_dir_name": "checkpoint_000000"}) + "\n")
    return folder


def test_export_refuses_a_non_empty_out_without_force(tmp_path, capsys):
    folder, out = tune_folder(tmp_path), tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my own notes")
    assert main([str(folder), "--out", str(out)]) == 2
    assert (f"tuner.export: --out: {out} is not empty (README.md); choose a new or empty folder, or pass --force "
            f"to replace it whole") in capsys.readouterr().err
    assert (out / "README.md").read_text() == "my own notes" and [p.name for p in out.iterdir()] == ["README.md"]
    (out / "README.md").unlink()
    assert export(folder, out) == out  # an empty folder is fine
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "trial.json",
                                               "README.md"}


def test_export_with_force_replaces_the_folder_whole(tmp_path):
    folder, out = tune_folder(tmp_path), tmp_path / "adapter"
    (out / "merged").mkdir(parents=True)  # an earlier --merge of another adapter
    (out / "merged" / "model.safetensors").write_text("stale")
    (out / "notes.txt").write_text("stale")
    export(folder, out, force=True)
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "trial.json",
                                               "README.md"}
    assert json.loads((out / "trial.json").read_text())["trial_id"] == "t1"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # nothing left beside it


def test_force_never_replaces_the_current_folder_or_the_results(tmp_path, monkeypatch):
    folder = tune_folder(tmp_path)
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work / "sub")
    with pytest.raises(ExportError, match="would delete the current folder"):
        export(folder, Path(".."), force=True)
    with pytest.raises(ExportError, match="would delete the results folder"):
        export(folder, folder / "trial_t1", force=True)
    assert (work / "sub").is_dir() and (folder / "trial_t1" / "result.json").is_file()
