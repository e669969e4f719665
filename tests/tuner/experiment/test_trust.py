"""A results folder that someone else planted (or can write to) is not read: every command that loads one stops with
the path and `--trust`; and reading trials never unpickles, even when trusted.

The planted folder is a Tune experiment whose pickles (the trial's embedded `storage` field, tuner.pkl, params.pkl)
each create a marker file when unpickled, the way a real payload would run its code.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from tuner.experiment.folder import Experiment
from tuner.spec import to_yaml, validate_spec
from tuner.experiment.trust import UntrustedFolder, check_folder, problems

OTHER_UID = 12345
as_root = pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another uid needs root")


class RunsCode:
    """Unpickling this opens (creates) the marker file: the stand-in for a payload."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant(root: Path) -> tuple[Path, Path]:
    """A Tune experiment folder as Ray writes it, with booby-trapped pickles; returns (folder, marker)."""
    folder, marker = root / "planted", root / "code-ran"
    payload = pickle.dumps(RunsCode(marker)).hex()
    trial = {"trial_id": "abc_00000", "status": "TERMINATED", "config": {"train.beta": 0.1},
             "relative_logdir": "run_trial_abc_00000", "trainable_name": "run_trial",
             "storage": {"_type": "CLOUDPICKLE_FALLBACK", "value": payload}}
    metadata = {"last_result": {"step": 2}, "error_filename": None, "pickled_error_filename": None}
    (folder / "tuner").mkdir(parents=True)
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [[json.dumps(trial), json.dumps(metadata)]], "runner_data": {}, "stats": {}}))
    (folder / "tuner.pkl").write_bytes(pickle.dumps(RunsCode(marker)))
    (folder / "tuner" / "spec.yaml").write_text(to_yaml(validate_spec({})))
    trial_dir = folder / "run_trial_abc_00000"
    trial_dir.mkdir()
    (trial_dir / "params.pkl").write_bytes(pickle.dumps(RunsCode(marker)))
    (trial_dir / "result.json").write_text(json.dumps({"eval_rewards/margins": 0.5, "step": 2, "max_steps": 2,
                                                       "training_iteration": 1, "trial_id": "abc_00000"}) + "\n")
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    return folder, marker


def give_away(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, OTHER_UID, OTHER_UID)


def commands(folder: Path, out: Path) -> dict:
    from analysis.__main__ import main as analysis_main
    from analysis.generations import main as generations_main
    from tuner.export import main as export_main
    from tuner.run import main as run_main

    return {
        "analysis": lambda *extra: analysis_main([str(folder), "--out", str(out / "report"), *extra]),
        "tuner.export": lambda *extra: export_main([str(folder), "--out", str(out / "adapter"), *extra]),
        "analysis.generations": lambda *extra: generations_main([str(folder), "--out", str(out / "gen"), *extra]),
        "tuner (--resume)": lambda *extra: run_main(["--resume", str(folder), *extra]),
    }


@as_root
@pytest.mark.parametrize("command", ["analysis", "tuner.export", "analysis.generations", "tuner (--resume)"])
def test_every_command_refuses_a_folder_another_user_owns(command, tmp_path, capsys):
    folder, marker = plant(tmp_path)
    give_away(folder)
    code = commands(folder, tmp_path / "out")[command]()
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{folder}: owned by uid {OTHER_UID}, not by you (uid 0)" in err
    assert "pass --trust to read it anyway" in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@as_root
def test_one_planted_pickle_in_an_owned_folder_is_found(tmp_path):
    folder, marker = plant(tmp_path)
    os.chown(folder / "tuner.pkl", OTHER_UID, OTHER_UID)
    with pytest.raises(UntrustedFolder, match=f"{folder / 'tuner.pkl'}: owned by uid {OTHER_UID}"):
        Experiment.open(folder)
    assert not marker.exists()


@pytest.mark.parametrize(("mode", "who"), [(0o620, "its group"), (0o602, "others"), (0o622, "its group and others")])
def test_a_file_others_can_write_is_refused(tmp_path, mode, who):
    folder, marker = plant(tmp_path)
    params = folder / "run_trial_abc_00000" / "params.pkl"
    params.chmod(mode)
    with pytest.raises(UntrustedFolder) as caught:
        Experiment.open(folder)
    assert str(caught.value).startswith(f"{params}: writable by {who} (mode 0{mode:o})")
    assert not marker.exists()


def test_a_group_writable_folder_is_refused_by_the_resume_cli(tmp_path, capsys):
    from tuner.run import main

    folder, marker = plant(tmp_path)
    folder.chmod(0o770)
    assert main(["--resume", str(folder)]) == 2
    assert f"{folder}: writable by its group (mode 0770)" in capsys.readouterr().err
    assert not marker.exists()


def test_a_link_is_judged_by_what_it_points_to(tmp_path):
    folder, _ = plant(tmp_path)
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    outside.chmod(0o666)
    (folder / "latest-run").symlink_to(outside)
    assert problems(folder) == [f"{folder / 'latest-run'}: writable by its group and others (mode 0666)"]


@as_root
def test_trust_reads_it_and_reading_trials_never_unpickles(tmp_path):
    folder, marker = plant(tmp_path)
    give_away(folder)
    check_folder(folder, trust=True)
    experiment = Experiment.open(folder, trust=True)
    trials = experiment.trials
    assert list(trials["trial_id"]) == ["abc_00000"] and list(trials["status"]) == ["finished"]
    assert trials.iloc[0]["path"] == str(folder / "run_trial_abc_00000")
    assert list(experiment.history["eval_rewards/margins"]) == [0.5]
    assert not marker.exists()  # the embedded pickle, tuner.pkl and params.pkl were never loaded


def test_an_owned_private_folder_passes(tmp_path):
    folder, _ = plant(tmp_path)
    assert problems(folder) == []
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
