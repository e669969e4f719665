"""Secrets in specs: whole field names decide what is a secret; a spec never holds one, only the name of the
environment variable that does, which the trial reads."""

from __future__ import annotations

import pytest

from tuner.trial.methods import training_args
from tuner.spec import SpecError, redacted, validate_spec
from tuner.spec.secrets import SecretMissing, is_secret, resolved


@pytest.mark.parametrize(("name", "secret"), [
    ("hub_token", True), ("train.hub_token", True), ("api_key", True), ("wandb_api_key", True),
    ("db_password", True), ("client_secret", True),
    # substrings of a secret's name are not secrets
    ("average_tokens_across_devices", False), ("include_num_input_tokens_seen", False),
    ("train.include_num_input_tokens_seen", False), ("max_new_tokens", False), ("tokenizer_name", False),
    ("pad_token", False), ("eos_token", False),  # a tokenizer's special tokens are text
    ("hub_token_env", False),  # a reference to a secret, not one
])
def test_secret_names_are_whole_names_not_substrings(name, secret):
    assert is_secret(name) is secret


def test_redaction_keeps_fields_whose_names_only_contain_token():
    dumped = validate_spec({"train": {"average_tokens_across_devices": False},
                            "search": {"space": {"train.include_num_input_tokens_seen":
                                                 {"type": "choice", "values": [True, False]}}}}).model_dump(mode="json")
    assert redacted(dumped) == dumped
    assert redacted({"train": {"hub_token": "hf_x", "pad_token": "<pad>"}}) == \
        {"train": {"hub_token": "***", "pad_token": "<pad>"}}


def test_a_literal_secret_is_refused_with_the_fix_and_not_echoed():
    with pytest.raises(SpecError) as caught:
        validate_spec({"train": {"hub_token": "hf_SECRET123"}})
    assert "hf_SECRET123" not in str(caught.value)
    assert caught.value.problems == [
        "train.hub_token: a secret is never written in a spec (it is saved with the results); leave it out and set "
        "HF_TOKEN in the environment, or put the name of an environment variable holding it in "
        "train.hub_token_env, got a literal value (not shown)"]
    validate_spec({"train": {"hub_token": None}})  # unset is fine


def test_secrets_cannot_be_searched_and_references_must_name_a_variable():
    with pytest.raises(SpecError) as caught:
        validate_spec({"search": {"space": {"train.hub_token": {"type": "choice", "values": ["a", "b"]}}},
                       "train": {"hub_token_env": "not a name"}})
    assert caught.value.problems == [
        "train.hub_token_env: the name of an environment variable holding hub_token, got 'not a name'",
        "search.space.train.hub_token: a secret cannot be searched; leave it out and set HF_TOKEN in the "
        "environment, or put the name of an environment variable holding it in train.hub_token_env, "
        "got 'train.hub_token'"]
    with pytest.raises(SpecError, match="train.learning_rate_env: not a field of TRL's DPOConfig"):
        validate_spec({"train": {"learning_rate_env": "LR"}})  # only secrets are read from the environment


def test_the_trial_reads_the_secret_from_the_variable_the_spec_names(monkeypatch, tmp_path):
    spec = validate_spec({"train": {"hub_token_env": "TUNER_TEST_TOKEN"}})
    monkeypatch.delenv("TUNER_TEST_TOKEN", raising=False)
    assert "hub_token_env" not in resolved(spec.train, with_secrets=False)
    with pytest.raises(SecretMissing, match="train.hub_token_env: the environment variable TUNER_TEST_TOKEN is not "
                                            "set, got 'TUNER_TEST_TOKEN' \\(in the process running this trial\\)"):
        training_args(spec, str(tmp_path), on_gpu=False, with_secrets=True)
    monkeypatch.setenv("TUNER_TEST_TOKEN", "hf_from_env")
    assert training_args(spec, str(tmp_path), on_gpu=False, with_secrets=True).hub_token == "hf_from_env"
    assert training_args(spec, str(tmp_path), on_gpu=False).hub_token is None
