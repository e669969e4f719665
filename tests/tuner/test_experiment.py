from __future__ import annotations

import stat

import pytest

from tuner import experiment
from tuner.spec import validate_spec


def test_created_folder_is_private_and_its_spec_redacted(tmp_path):
    spec = validate_spec({"train": {"hub_token": "hf_SECRET123", "beta": 0.2}})
    created = experiment.Experiment.create(spec, experiment.check_storage(str(tmp_path / "results"), "exp"))
    path = created.path
    assert path == tmp_path / "results" / "exp" and created.uri == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE(created.tuner_dir.stat().st_mode) == 0o700
    saved = created.spec_file.read_text()
    assert "hf_SECRET123" not in saved and "hub_token: '***'" in saved and "beta: 0.2" in saved


@pytest.mark.parametrize(("name", "message"), [("", "plain folder name"), ("a/b", "plain folder name"),
                                               ("..", "plain folder name")])
def test_experiment_names_are_plain(tmp_path, name, message):
    with pytest.raises(experiment.InputError, match=message):
        experiment.check_storage(str(tmp_path), name)


@pytest.mark.parametrize(("train", "search", "rows"), [
    ({"max_steps": 24, "per_device_train_batch_size": 2}, {}, 48),
    ({"max_steps": 10, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}, {}, 80),
    ({"num_train_epochs": 1}, {}, None),
    ({"max_steps": 24}, {"train.per_device_train_batch_size": {"type": "choice", "values": [2, 4]}}, None),
])
def test_rows_a_trial_can_consume(train, search, rows):
    assert validate_spec({"train": train, "search": {"space": search}}).rows_consumed() == rows
