"""A trial resumed by Tune: which checkpoint it continues from."""

from __future__ import annotations

import json
from types import SimpleNamespace

from ray import tune

from tuner.trial import trainable
from tuner.trial.reporting import RESUME_FILES


def checkpoint_folder(trial_dir, name, step):
    folder = trial_dir / name
    folder.mkdir(parents=True)
    for file in RESUME_FILES:
        (folder / file).write_text("{}")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_a_trial_whose_restored_checkpoint_was_deleted_continues_from_the_newest_left(tmp_path, monkeypatch):
    # Ray deleted checkpoint_000002 (evicted when checkpoint_000003 registered) after its last experiment-state save;
    # the driver was then killed, so the restored state still names checkpoint_000002.
    trial_dir = tmp_path / "run_trial_x"
    checkpoint_folder(trial_dir, "checkpoint_000000", 4)
    newest = checkpoint_folder(trial_dir, "checkpoint_000003", 16)
    gone = tune.Checkpoint.from_directory(str(trial_dir / "checkpoint_000002"))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: gone)
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_dir=lambda: str(trial_dir)))
    reporter = SimpleNamespace(last_reported_step=-1)
    assert trainable._resumable_checkpoint(reporter) == str(newest)
    assert reporter.last_reported_step == 16


def test_no_checkpoint_left_starts_the_trial_over(tmp_path, monkeypatch):
    gone = tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000002"))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: gone)
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_dir=lambda: str(tmp_path)))
    assert trainable._resumable_checkpoint(SimpleNamespace(last_reported_step=-1)) is None
