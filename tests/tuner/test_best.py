"""One `Experiment.best()`: the ranking row, the final table, the exported checkpoint and the generations adapter
describe one report of one trial, on a real Ray Tune folder with scripted metrics and checkpoints, kept in a local
folder and in object storage (moto's S3 server), read there from another machine's working copy.

Each scripted trial writes its step into every checkpoint, so a test can tell which report a checkpoint holds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from tuner.experiment import Experiment
from tuner.spec import validate_spec

PREF, MARGIN = "eval_pref_accuracy", "eval_rewards/margins"
# trial -> reports as (eval_pref_accuracy, eval_rewards/margins); "raise" ends the trial in an error
SCRIPTS = {
    # best pref 0.9 at step 1; its best margin (2.0, step 2) has its checkpoint evicted (Tune keeps the best by pref
    # and the latest)
    "evicted": [(0.9, 0.1), (0.6, 2.0), (0.5, 0.05)],
    "steady": [(0.7, 0.3), (0.85, 0.4)],
    # 0.8 twice: only one of the two checkpoints is kept, and the ranking must name that one's step
    "tied": [(0.5, 0.2), (0.8, 0.25), (0.8, 0.3)],
    # the best score of all, then a crash: listed, never ranked, never exported
    "crashed": [(1.0, 5.0), "raise"],
}


def scripted_trial(config):
    from ray import tune

    for step, report in enumerate(SCRIPTS[config["script"]], start=1):
        if report == "raise":
            raise RuntimeError("loss is NaN at step 2")
        pref, margin = report
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "none"}))
            Path(folder, "adapter_model.safetensors").write_text("weights")
            Path(folder, "step.json").write_text(json.dumps({"step": step}))
            tune.report({PREF: pref, MARGIN: margin, "eval_loss": 1.0 - pref, "step": step, "max_steps": 3},
                        checkpoint=tune.Checkpoint.from_directory(folder))


@pytest.fixture(scope="module", params=["folder", "s3"])
def scripted(request, tmp_path_factory) -> Experiment:
    import ray
    from ray import tune

    from tuner.experiment import check_storage

    spec = validate_spec({"search": {"metric": PREF, "num_samples": 4,
                                     "space": {"train.beta": {"type": "choice", "values": [0.1]}}},
                          "run": {"keep_checkpoints": 1}})
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        storage_path = s3.uri(s3.bucket("scripted"), "results")
    else:
        storage_path = str(tmp_path_factory.mktemp("results"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNER_CACHE", str(tmp_path_factory.mktemp("driver")))
        location = check_storage(storage_path, "scripted")
        Experiment.create(spec, location)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            tune.Tuner(
                scripted_trial,
                param_space={"script": tune.grid_search(list(SCRIPTS))},
                tune_config=tune.TuneConfig(max_concurrent_trials=2),
                run_config=tune.RunConfig(
                    name="scripted", storage_path=location.parent.uri, verbose=0,  # a URI as Ray Tune takes it
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=PREF,
                                                            checkpoint_score_order="max")),
            ).fit()
        finally:
            ray.shutdown()
        patch.setenv("TUNER_CACHE", str(tmp_path_factory.mktemp("reader")))  # read as from another machine
        yield Experiment.open(location.uri)


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
    from tuner.run import report

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
