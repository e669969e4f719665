from __future__ import annotations

import math

import pytest

from tuner.experiment import Experiment
from tests.analysis.fabricated import frames
from tuner.export import ExportError, choose


def test_export_refuses_when_no_trial_has_a_finite_metric(tmp_path):
    trials, history = frames({"a": [math.nan], "b": [0.3]}, status={"b": "errored"})
    experiment = Experiment(tmp_path, trials=trials, history=history)
    with pytest.raises(ExportError, match="no trial reported a finite eval_rewards/margins"):
        choose(experiment, None, "eval_rewards/margins", "max")
    with pytest.raises(ExportError, match="--trial zz: no such trial"):
        choose(experiment, "zz", "eval_rewards/margins", "max")
    with pytest.raises(ExportError, match="has no trials"):
        choose(Experiment(tmp_path, trials=trials.iloc[0:0], history=history), None, "x", "max")
