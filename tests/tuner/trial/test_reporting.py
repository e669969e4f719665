"""The reporting callback: what it sends to Tune, and what ends a trial."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from tuner.trial.reporting import DivergedError, TuneReportCallback


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_a_nan_or_infinite_loss_ends_the_trial_naming_the_step(loss):
    callback = TuneReportCallback(tokenizer=None)
    callback.on_log(None, SimpleNamespace(global_step=6), None, logs={"loss": 0.69, "learning_rate": 1e-4})
    with pytest.raises(DivergedError, match=f"training loss is {loss} at step 7: the trial diverged"):
        callback.on_log(None, SimpleNamespace(global_step=7), None, logs={"loss": loss, "learning_rate": 1e-4})


def test_transformers_is_told_not_to_hide_nan_losses():
    from tuner.spec import validate_spec

    assert validate_spec({}).trl_args().logging_nan_inf_filter is False


def test_running_totals_are_reported_as_their_last_value_and_rates_averaged():
    callback = TuneReportCallback(tokenizer=None)
    state = SimpleNamespace(global_step=1)
    for loss, tokens in [(0.7, 100), (0.5, 220), (0.3, 330)]:
        callback.on_log(None, state, None, logs={"loss": loss, "num_tokens": float(tokens), "learning_rate": 1e-4})
    summary = callback._train_summary()
    assert summary["num_tokens"] == 330  # TRL's num_tokens counts every token so far: a mean would undercount
    assert summary["loss"] == pytest.approx(0.5)
