from __future__ import annotations

import stat

import pytest

from tuner import experiment
from tuner.methods import training_args
from tuner.spec import validate_spec


def test_created_folder_is_private_and_its_spec_holds_the_secret_reference_not_the_secret(tmp_path, monkeypatch):
    # A spec cannot hold a secret (tests/tuner/test_secrets.py): it names the variable that does, and the saved spec
    # keeps that name, so that --resume, which reads the saved spec, gets the real secret back in the trial.
    monkeypatch.setenv("TUNER_TEST_HUB_TOKEN", "hf_SECRET123")
    spec = validate_spec({"train": {"hub_token_env": "TUNER_TEST_HUB_TOKEN", "beta": 0.2,
                                    "average_tokens_across_devices": False},
                          "search": {"space": {"train.include_num_input_tokens_seen":
                                               {"type": "choice", "values": [True, False]}}}})
    created = experiment.Experiment.create(spec, experiment.check_storage(str(tmp_path / "results"), "exp"))
    path = created.path
    assert path == tmp_path / "results" / "exp" and created.uri == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE(created.tuner_dir.stat().st_mode) == 0o700
    saved = created.spec_file.read_text()
    assert "hf_SECRET123" not in saved and "***" not in saved
    assert "hub_token_env: TUNER_TEST_HUB_TOKEN" in saved and "beta: 0.2" in saved
    assert "average_tokens_across_devices: false" in saved

    resumed = experiment.Experiment(path).spec  # what --resume reads
    assert resumed.model_dump() == spec.model_dump()
    trial_args = training_args(resumed, str(tmp_path / "out"), on_gpu=False, with_secrets=True)
    assert trial_args.hub_token == "hf_SECRET123" and trial_args.average_tokens_across_devices is False
    assert resumed.trl_args().hub_token is None  # values derived in the driver never hold the secret


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
