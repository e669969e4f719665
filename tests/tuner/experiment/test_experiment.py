from __future__ import annotations

import stat

import pytest

from tuner.data.checks import check_guard_groups
from tuner.errors import InputError
from tuner.experiment.checks import check_storage
from tuner.experiment.folder import Experiment
from tuner.experiment.lock import ExperimentInUse
from tuner.trial.methods import training_args
from tuner.spec import validate_spec


def test_created_folder_is_private_and_its_spec_holds_the_secret_reference_not_the_secret(tmp_path, monkeypatch):
    # A spec cannot hold a secret (tests/tuner/spec/test_secrets.py): it names the variable that does, and the saved spec
    # keeps that name, so that --resume, which reads the saved spec, gets the real secret back in the trial.
    monkeypatch.setenv("TUNER_TEST_HUB_TOKEN", "hf_SECRET123")
    spec = validate_spec({"train": {"hub_token_env": "TUNER_TEST_HUB_TOKEN", "beta": 0.2,
                                    "average_tokens_across_devices": False},
                          "search": {"space": {"train.include_num_input_tokens_seen":
                                               {"type": "choice", "values": [True, False]}}}})
    created = Experiment.create(spec, check_storage(str(tmp_path / "results"), "exp"))
    path = created.path
    assert path == tmp_path / "results" / "exp" and created.uri == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE(created.tuner_dir.stat().st_mode) == 0o700
    saved = created.spec_file.read_text()
    assert "hf_SECRET123" not in saved and "***" not in saved
    assert "hub_token_env: TUNER_TEST_HUB_TOKEN" in saved and "beta: 0.2" in saved
    assert "average_tokens_across_devices: false" in saved

    resumed = Experiment(path).spec  # what --resume reads
    assert resumed.model_dump() == spec.model_dump()
    trial_args = training_args(resumed, str(tmp_path / "out"), on_gpu=False, with_secrets=True)
    assert trial_args.hub_token == "hf_SECRET123" and trial_args.average_tokens_across_devices is False
    assert resumed.trl_args().hub_token is None  # values derived in the driver never hold the secret


@pytest.mark.parametrize(("name", "message"), [("", "plain folder name"), ("a/b", "plain folder name"),
                                               ("..", "plain folder name")])
def test_experiment_names_are_plain(tmp_path, name, message):
    with pytest.raises(InputError, match=message):
        check_storage(str(tmp_path), name)


@pytest.mark.parametrize(("train", "search", "rows"), [
    ({"max_steps": 24, "per_device_train_batch_size": 2}, {}, 48),
    ({"max_steps": 10, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}, {}, 80),
    ({"num_train_epochs": 1}, {}, None),
    ({"max_steps": 24}, {"train.per_device_train_batch_size": {"type": "choice", "values": [2, 4]}}, None),
])
def test_rows_a_trial_can_consume(train, search, rows):
    assert validate_spec({"train": train, "search": {"space": search}}).rows_consumed() == rows


def dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_the_run_lock_is_held_for_the_block_and_a_dead_driver_s_lock_taken_over(tmp_path):
    import json
    import os
    import socket

    created = Experiment.create(validate_spec({}), tmp_path / "exp")
    created.lock_file.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))  # SIGKILLed driver
    with created.locked():
        assert json.loads(created.lock_file.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(ExperimentInUse, match=f"in use by a live tuner run \\(pid {os.getpid()}\\)"):
            with Experiment(created.path).locked():
                pass
    assert not created.lock_file.exists()
    created.lock_file.write_text(json.dumps({"pid": 1, "host": "other-node"}))
    with pytest.raises(ExperimentInUse, match="locked by a tuner run on host other-node .* delete"):
        with created.locked():
            pass


def test_a_failed_start_removes_the_folders_it_created_and_nothing_else(tmp_path):
    path = check_storage(str(tmp_path / "a" / "b"), "exp")
    created = Experiment.create(validate_spec({}), path)
    created.data_dir.mkdir()
    created.discard()
    assert not (tmp_path / "a").exists() and tmp_path.exists()
    kept = Experiment.create(validate_spec({}), tmp_path / "kept")
    Experiment(kept.path).discard()  # not this object's: left alone
    assert kept.spec_file.is_file()


def test_guard_groups_with_no_eval_pair_guard_nothing_and_say_so():
    from datasets import Dataset

    from tuner.errors import InputError

    held_out = Dataset.from_dict({"prompt": ["a", "b", "c"], "group": ["fact", "style", "style"]})
    spec = validate_spec({"search": {"guard_groups": ["fact"]}})
    assert check_guard_groups(spec, held_out) is None
    spec = validate_spec({"search": {"guard_groups": ["fact", "tone"]}})
    train = Dataset.from_dict({"prompt": ["d"], "group": ["tone"]})  # in the data, capped out of the eval split
    assert check_guard_groups(spec, held_out, train) == (
        "search.guard_groups: no eval pair is in tone (the eval groups are ['fact', 'style']): those guard nothing")
    # a group of no pair of grouped data (a typo) would switch its guard off: refused, with the near name
    with pytest.raises(InputError) as refused:
        check_guard_groups(validate_spec({"search": {"guard_groups": ["facts"]}}), held_out, train)
    assert str(refused.value) == ("search.guard_groups: ['facts'] is no group of the data (did you mean fact?); its "
                                  "groups are ['fact', 'style', 'tone'], got ['facts']")
    ungrouped = held_out.remove_columns("group")
    assert check_guard_groups(spec, ungrouped).endswith(
        "(the eval pairs have no groups (data.group_column)): no guard applies")
    with pytest.raises(InputError, match="every eval group is a guard"):
        check_guard_groups(validate_spec({"search": {"guard_groups": ["fact", "style"]}}), held_out)
