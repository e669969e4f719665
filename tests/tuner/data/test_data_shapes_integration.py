"""A real tiny search on each shape of the most used public preference sets, DPO and ORPO in one search (the method
a searched choice): what the shape reader makes of a file is what TRL's trainers, the shared reference pass and the
eval pass all read."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, spec_path
from tests.tuner.data.test_data_shapes import h4_row, hh_row, turns, write
from tuner.experiment.folder import Experiment

pytestmark = pytest.mark.integration


def multi_turn_row(i):
    """trl-lib/ultrafeedback_binarized's shape (the prompt implicit), with a system turn and two user turns."""
    context = turns(("system", "Answer briefly."), ("user", f"question {i}?"), ("assistant", "Which part?"),
                    ("user", "All of it."))
    return {"chosen": context + turns(("assistant", f"All of {i}, right.")),
            "rejected": context + turns(("assistant", f"All of {i}, wrong."))}


SHAPES = {
    "h4.parquet": (h4_row, "conversations, prompt taken from chosen/rejected; its prompt column not used"),
    "trl.json": (multi_turn_row, "conversations, prompt taken from chosen/rejected; up to 5 turns; 24 system turns"),
    "hh.jsonl": (hh_row, "hh-rlhf text turns"),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_search_on_each_shape_trains_dpo_and_orpo(name, tiny_llama, tmp_path):
    make, read = SHAPES[name]
    source = write(tmp_path / name, [make(i) for i in range(24)])
    points = ("search.points_to_evaluate=["
              "{method: dpo, dpo.train.beta: 0.1, dpo.train.learning_rate: 1.0e-4, orpo.train.beta: 4.0,"
              " orpo.train.learning_rate: 5.0e-4},"
              " {method: orpo, dpo.train.beta: 0.1, dpo.train.learning_rate: 1.0e-4, orpo.train.beta: 4.0,"
              " orpo.train.learning_rate: 5.0e-4}]")
    command = [sys.executable, "-m", "tuner.run", str(spec_path("compare.yaml")), f"model.name={tiny_llama}",
               f"run.storage_path={tmp_path}", "--name", "shape", f"data.source={source}", "search.num_samples=2",
               "scheduler.type=none", points, "train.max_steps=2", "train.eval_steps=2",
               "train.per_device_train_batch_size=2", "data.max_eval_rows=4", "model.max_length=64",
               "search.test_top_k=0", "data.test_fraction=0"]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "RAY_DEDUP_LOGS": "0"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"data read: {read}" in done.stdout
    assert "data tokens (median / 95th percentile over 4 train and 4 eval pairs): prompts " in done.stdout
    experiment = Experiment.open(tmp_path / "shape")
    assert sorted(experiment.trials["method"]) == ["dpo", "orpo"]
    assert set(experiment.trials["status"]) == {"finished"}
    assert experiment.history["eval_pref_accuracy"].notna().all()
