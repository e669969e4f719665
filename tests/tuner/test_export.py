from __future__ import annotations

import math

import pytest

from analysis.load import Experiment
from tests.analysis.fabricated import frames
from tuner.export import ExportError, choose_trial


def test_export_refuses_when_no_trial_has_a_finite_metric(tmp_path):
    trials, history = frames({"a": [math.nan], "b": [0.3]}, status={"b": "errored"})
    experiment = Experiment(tmp_path, {}, trials, history, analysis=None)
    with pytest.raises(ExportError, match="no trial reported a finite eval_rewards/margins"):
        choose_trial(experiment, None, "eval_rewards/margins", "max")
    with pytest.raises(ExportError, match="--trial zz: no such trial"):
        choose_trial(experiment, "zz", "eval_rewards/margins", "max")
    with pytest.raises(ExportError, match="has no trials"):
        choose_trial(Experiment(tmp_path, {}, trials.iloc[0:0], history, analysis=None), None, "x", "max")
