"""One `Experiment.best()`: the ranking row, the final table, the exported checkpoint and the generations adapter
describe one report of one trial, on a real Ray Tune folder with scripted metrics and checkpoints, kept in a local
folder and in object storage (moto's S3 server), read there from another machine's working copy.

Each scripted trial writes its step into every checkpoint, so a test can tell which report a checkpoint holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MARGIN, PREF, run_scripted_search
from tuner.experiment.folder import Experiment

@pytest.fixture(scope="module", params=["folder", "s3"])
def scripted(request, tmp_path_factory) -> Experiment:
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        storage_path = s3.uri(s3.bucket("scripted"), "results")
    else:
        storage_path = str(tmp_path_factory.mktemp("results"))
    with pytest.MonkeyPatch.context() as patch:
        yield run_scripted_search(storage_path, tmp_path_factory.mktemp("driver"), tmp_path_factory.mktemp("reader"),
                                  patch)


def script_of(experiment: Experiment, trial_id: str) -> str:
    return experiment.trials.set_index("trial_id").loc[trial_id, "config/script"]


def checkpoint_step(experiment: Experiment, checkpoint: Path | str) -> int:
    return json.loads((experiment.local_copy(checkpoint) / "step.json").read_text())["step"]


def test_every_ranked_row_is_the_report_of_a_kept_checkpoint(scripted):
    for metric in (PREF, MARGIN):
        ranked = scripted.ranking(metric)
        for _, row in ranked[ranked["rank"].notna()].iterrows():
            best = scripted.best(metric, trial_id=row["trial_id"])
            assert best.step == row["score_step"] == checkpoint_step(scripted, best.checkpoint)
            assert best.report[metric] == row["score"]


def test_best_is_the_top_row_with_its_own_checkpoint(scripted):
    best = scripted.best()
    assert script_of(scripted, best.trial_id) == "evicted"
    assert (best.score, best.step, checkpoint_step(scripted, best.checkpoint)) == (0.9, 1, 1)
    assert best.report[PREF] == 0.9 and best.metric == PREF and best.mode == "max"


def test_tied_scores_name_the_step_whose_checkpoint_is_kept(scripted):
    tied = scripted.trials.loc[scripted.trials["config/script"] == "tied", "trial_id"].item()
    best = scripted.best(trial_id=tied)
    assert best.score == 0.8
    assert best.step == checkpoint_step(scripted, best.checkpoint) and best.step in (2, 3)


def test_errored_trial_with_the_top_score_is_listed_but_never_ranked_or_exported(scripted):
    ranked = scripted.ranking()
    crashed = ranked[ranked["config/script"] == "crashed"].iloc[0]
    assert crashed["status"] == "errored" and crashed["score"] == 1.0 and crashed["rank"] != crashed["rank"]
    assert script_of(scripted, ranked.iloc[0]["trial_id"]) == "evicted"
    assert list(ranked["rank"].dropna()) == [1, 2, 3]


def test_a_metric_whose_best_report_lost_its_checkpoint_ranks_on_the_kept_one(scripted):
    evicted = scripted.trials.loc[scripted.trials["config/script"] == "evicted", "trial_id"].item()
    by_margin = scripted.best(MARGIN, trial_id=evicted)
    # margin 2.0 at step 2 was reported, but its checkpoint was evicted (kept by pref): step 1 is what exists
    assert (by_margin.score, by_margin.step, checkpoint_step(scripted, by_margin.checkpoint)) == (0.1, 1, 1)


def test_export_with_another_metric_writes_the_checkpoint_the_ranking_describes(scripted, tmp_path):
    from tuner.export import export

    out = export(scripted.uri, tmp_path / "adapter", metric=MARGIN)
    trial = json.loads((out / "trial.json").read_text())
    best = scripted.best(MARGIN)
    assert trial["trial_id"] == best.trial_id and trial["metric"] == MARGIN
    assert trial["step"] == best.step == json.loads((out / "step.json").read_text())["step"]
    assert trial["metrics"][MARGIN] == best.score
    assert script_of(scripted, best.trial_id) == "steady"  # 0.4 at step 2 (crashed's 5.0 is not a candidate)


def test_final_table_and_best_checkpoint_line_agree(scripted, capsys):
    from tuner.evidence.closing import report

    report(scripted, top=5)
    out = capsys.readouterr().out
    best = scripted.best()
    assert f"best trial {best.trial_id}: {PREF} = 0.9 " in out and "at step 1)" in out
    assert f"best checkpoint (LoRA adapter + tokenizer): {best.checkpoint}" in out
    assert f"errored trial {scripted.ranking().iloc[-1]['trial_id']}: RuntimeError: loss is NaN at step 2" in out


def test_generations_use_the_same_best_adapter(scripted):
    from analysis.generations import best_adapters

    best = scripted.best(method="dpo")
    assert best_adapters(scripted.uri) == {f"best DPO ({best.trial_id})": scripted.local_copy(best.checkpoint)}


def test_kept_checkpoints_are_named_where_they_are_stored(scripted):
    kept = scripted.history["checkpoint_path"].dropna()
    assert set(scripted.history.loc[kept.index, "trial_id"]) == set(scripted.trials["trial_id"])
    for checkpoint in kept:
        assert scripted.location.relative(checkpoint).split("/")[-1].startswith("checkpoint_")
        assert str(checkpoint).startswith(scripted.uri.split("?")[0])  # a folder, or a URI with its query
        assert (scripted.local_copy(checkpoint) / "adapter_model.safetensors").read_text() == "weights"
