"""A real search on the unsloth backend, with a fake unsloth standing in for the real one (which needs a GPU;
tests/fake_unsloth): DPO's shared reference computed once, in a Ray task that loads the trials' own 4-bit base,
an ORPO trial beside it, and the test scoring with the same base. Everything but the model loader is tuner's,
TRL's and Ray's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.conftest import REPO, spec_path
from tests.tuner.trial.test_backends import FAKE_UNSLOTH
from tuner.experiment.folder import Experiment
from tuner.passes import tasks as model_passes

pytestmark = pytest.mark.integration

FAST = ["train.max_steps=4", "train.eval_steps=2", "train.per_device_train_batch_size=2", "data.max_rows=16",
        "data.max_eval_rows=4", "model.max_length=64"]
POINTS = ("search.points_to_evaluate=["
          "{method: dpo, dpo.train.beta: 0.1, dpo.train.learning_rate: 1.0e-4, orpo.train.beta: 4.0,"
          " orpo.train.learning_rate: 5.0e-4},"
          " {method: orpo, dpo.train.beta: 0.1, dpo.train.learning_rate: 1.0e-4, orpo.train.beta: 4.0,"
          " orpo.train.learning_rate: 5.0e-4}]")


def test_dpo_and_orpo_on_unsloth_share_one_reference_pass_on_the_trials_base(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE_UNSLOTH))
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    from unsloth import read_log

    log = tmp_path / "unsloth.jsonl"
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "FAKE_UNSLOTH_LOG": str(log), "TUNER_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(FAKE_UNSLOTH), str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "tuner.run", str(spec_path("compare.yaml")), f"model.name={tiny_llama}",
               f"run.storage_path={tmp_path}", "--name", "unsloth", "model.backend=unsloth", *FAST,
               "search.num_samples=2", "scheduler.type=none", "search.test_top_k=2", POINTS]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "shared by every DPO trial (unsloth, 4bit, on the trials' GPU share)" in done.stdout

    experiment = Experiment.open(tmp_path / "unsloth")
    passes = model_passes.recorded(experiment)
    assert passes[model_passes.RUNTIME] == {"backend": "unsloth", "device": "cuda", "precision": "4bit"}
    [reference] = passes["prepare"]
    assert reference["pass"] == "reference" and reference["node_id"] is not None  # a Ray task, not the driver
    assert (experiment.reference_dir / "train").is_dir()

    # Each trial loaded one model, its 4-bit base with LoRA; the reference pass and the test scoring loaded the
    # same 4-bit base in processes of their own, without LoRA of their own (a trial's adapter is loaded with PEFT).
    calls = defaultdict(list)
    for call in read_log(log):
        calls[call["pid"]].append(call)
    trials = {pid: c for pid, c in calls.items() if any(x["call"] == "get_peft_model" for x in c)}
    passes_only = {pid: c for pid, c in calls.items() if pid not in trials}
    assert len(trials) == 2
    for made in trials.values():
        assert [x["call"] for x in made] == ["from_pretrained", "get_peft_model"]
    loads = [x for c in calls.values() for x in c if x["call"] == "from_pretrained"]
    # and with the logits TRL's losses and the passes read (UNSLOTH_RETURN_LOGITS), in trials and passes alike
    assert all(x["load_in_4bit"] and x["max_seq_length"] == 64 and x["return_logits"] == "1" for x in loads)
    # the reference pass (train + eval), the base model's test scores and the two trials' test scores
    assert sum(len(c) for c in passes_only.values()) == 4

    history, trials_table = experiment.history, experiment.trials
    by_method = dict(zip(trials_table["method"], trials_table["trial_id"]))
    assert set(by_method) == {"dpo", "orpo"} and set(trials_table["status"]) == {"finished"}
    dpo = history[history["trial_id"] == by_method["dpo"]]
    orpo = history[history["trial_id"] == by_method["orpo"]]
    assert dpo["eval_rewards/margins"].notna().all() and dpo["eval_pref_accuracy"].notna().all()
    assert orpo["eval_log_odds_ratio"].notna().all() and orpo["eval_pref_accuracy"].notna().all()
    first = history.sort_values("training_iteration").groupby("trial_id").first()
    assert set(first["setup/backend"]) == {"unsloth"}
    assert first.loc[by_method["dpo"], "setup/reference"] == "shared"
    scored = json.loads(experiment.test_scores_file.read_text())["models"]
    assert len(scored) == 3 and "Test split:" in done.stdout
