"""The test scoring in the shadow of the trials: the base model and each finished trial that can still be among the
top `search.test_top_k` are scored on the test split as Ray tasks while the other trials run, so that the end of a
search waits for the last trial's scoring at most, not for every model in series.

The test split stays unseen by the search: the scores go to `tuner/test_scores.json` only (the file
tuner.evidence.scoring reads at the end), never to Tune, ASHA, Optuna or the ranking. A finished trial is scored on the
checkpoint that the ranking will name (its best report holding every guard, among its kept checkpoints:
tuner.experiment.ranking.summarize on what Tune kept), once it ranks within the top k of the trials finished so far; one that
a later trial pushes out of the top k was scored for nothing, and one the final ranking names on another checkpoint
is scored at the end as before. Each task asks for a trial's resources, so it runs in a slot a finished trial frees.
"""

from __future__ import annotations

import posixpath
import time

import pandas as pd
from ray import tune

from tuner.passes import tasks as model_passes


class ShadowScoring(tune.Callback):
    def __init__(self, uri: str):
        self.uri = uri
        self._started = False
        self._pending: dict = {}  # Ray ref -> (key, Best or None, submitted at)
        self._finished: dict[str, float] = {}  # trial id -> its signed best score (lower is better)
        self._runs: list[dict] = []
        self._base: tuple | None = None  # (fingerprint, inputs) of the base model's test pass, to cache it

    def __reduce__(self):  # Tune pickles its callbacks (tuner.pkl): rebuilt, with nothing pending, on --resume
        return ShadowScoring, (self.uri,)

    # ------------------------------------------------------------------------------------------ Tune's hooks

    def setup(self, **info):
        self._start()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._start()
        if self.experiment is None:
            return
        best = self._best_of(trial)
        if best is None:
            return
        signed, candidate = best
        self._finished[trial.trial_id] = signed
        rank = sorted(self._finished.values()).index(signed)
        key = self._key(candidate)
        if rank < self.top_k and key not in self._cache()["models"] and key not in self._keys_pending():
            self._submit(key, candidate)

    def on_step_end(self, iteration, trials, **info):
        self._collect(timeout=0)

    def on_experiment_end(self, trials, **info):
        self._collect(timeout=None)  # the last trial's scoring: what the end of the search waits for

    # ------------------------------------------------------------------------------------------ the work

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        from datasets import load_from_disk

        from tuner.experiment.folder import Experiment

        experiment = Experiment(self.uri)  # in object storage: the driver's working copy, spec and data in it
        self.top_k = experiment.spec.search.test_top_k
        if self.top_k <= 0 or not experiment.has_test_split:
            self.experiment = None
            return
        self.experiment = experiment
        self.spec = experiment.spec
        self.runtime = model_passes.runtime_of(experiment)
        self.test = model_passes.in_memory(load_from_disk(str(experiment.local_copy(experiment.test_dir))))
        self.ids = ([str(i) for i in self.test["pair_id"]] if "pair_id" in self.test.column_names
                    else [str(i) for i in range(len(self.test))])
        if len(self.spec.model_names()) == 1:  # searched models: the end scores the winner's base, as before
            self._submit_base()

    def _cache(self) -> dict:
        from tuner.evidence import scoring

        return scoring._read_cache(self.experiment.test_scores_file, self.ids)

    def _keys_pending(self) -> set[str]:
        return {key for key, _, _ in self._pending.values()}

    def _key(self, best) -> str:
        from tuner.evidence import scoring

        return scoring._trial_key(self.experiment, best)

    def _submit_base(self) -> None:
        from tuner.trial import models
        from tuner.evidence.quality import PairScores, pair_ids, with_pair_ids

        name = self.spec.model.name
        key = f"base:{name}"
        if key in self._cache()["models"]:
            return
        pairs = with_pair_ids(self.test)
        fingerprint, inputs, lookup = model_passes._cached_pass(self.spec, self.runtime, models.resolve(name),
                                                                {"eval": pairs}, False)
        if lookup is not None and lookup.entry is not None:
            import json

            stored = PairScores(**json.loads((lookup.entry / "scores.json").read_text())["eval"])
            chosen, rejected = stored.means(pair_ids(pairs))
            self._write(key, {"model": name, "chosen": chosen, "rejected": rejected})
            self._runs.append({"pass": "base model (test)", "reused": True, "fingerprint": fingerprint,
                               "node_id": None, "seconds": 0.0})
            self._record()
            return
        self._base = (fingerprint, inputs)
        self._submit(key, None, (model_passes._reference_task, (self.spec, self.runtime, models.resolve(name),
                                                                {"eval": pairs}, False)))

    def _submit(self, key: str, best, call=None) -> None:
        from tuner.evidence import scoring

        call = call or (scoring._score_in_task, (self.uri, self.spec, self.runtime, self.test, best,
                                                 self.spec.model.name))
        function, args = call
        self._pending[model_passes.submit(self.spec, self.runtime, function, *args)] = (key, best, time.time())

    def _collect(self, timeout: float | None) -> None:
        if not self._pending:
            return
        import ray

        ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=timeout)
        for ref in ready:
            key, best, _ = self._pending.pop(ref)
            try:
                value, where = ray.get(ref)
            except Exception as error:  # the end of the search scores it again, and says what failed then
                print(f"tuner: warning: scoring {key} on the test split in the shadow of the trials failed: "
                      f"{str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__}")
                continue
            if best is None:
                value = self._base_entry(value)
            self._write(key, value)
            self._runs.append({"pass": "base model (test)" if best is None else f"trial {best.trial_id} (test)",
                               "reused": False, "fingerprint": self._base[0] if best is None else None, **where})
        if ready:
            self._record()

    def _base_entry(self, value: dict) -> dict:
        from tuner.evidence.quality import PairScores, pair_ids, with_pair_ids

        fingerprint, inputs = self._base
        if fingerprint is not None:
            model_passes._store(fingerprint, inputs, value)
        chosen, rejected = PairScores(**value["eval"][1]).means(pair_ids(with_pair_ids(self.test)))
        return {"model": self.spec.model.name, "chosen": chosen, "rejected": rejected}

    def _write(self, key: str, entry: dict) -> None:
        from tuner.evidence import scoring

        cache = self._cache()
        cache["models"][key] = entry
        scoring._write_cache(self.experiment.test_scores_file, cache)
        self.experiment.publish(self.experiment.test_scores_file)

    def _record(self) -> None:
        model_passes.record(self.experiment, "shadow", self._runs)

    def _best_of(self, trial):
        """(signed best score, Best) of a finished trial's checkpoint that the ranking will name, from what Tune
        kept of it; None when no kept report has a finite score."""
        from tuner.experiment.ranking import Best
        from tuner.experiment.ranking import CHECKPOINT_COLUMN, summarize

        kept = trial.run_metadata.checkpoint_manager.best_checkpoint_results
        if not kept:
            return None
        metric, mode = self.spec.metric, self.spec.search.mode
        history = pd.DataFrame([{**result.metrics, CHECKPOINT_COLUMN: result.checkpoint.path,
                                 "trial_id": trial.trial_id} for result in kept])
        if metric not in history:
            return None
        summary = summarize(history, metric, mode)
        if summary.empty or pd.isna(summary.iloc[0]["best"]):
            return None
        row = summary.iloc[0]
        report = history.loc[row["best_report"]]
        location = self.experiment.location
        path = str(report[CHECKPOINT_COLUMN])
        checkpoint = (self.experiment.path / posixpath.relpath(path, location.fs_path) if location.is_local
                      else location.uri_of(path))
        config = dict(trial.config)
        best = Best(trial_id=trial.trial_id, method=str(config.get("method", self.spec.method)), metric=metric,
                    mode=mode, score=float(row["best"]), step=int(row["best_step"]), report={},
                    checkpoint=checkpoint, config=config)
        return (-best.score if mode == "max" else best.score), best


OFF_VARIABLE = "TUNER_SHADOW_SCORING"  # "off": every model is scored when the search ends (benchmarks compare)


def callbacks(spec, experiment) -> list:
    """The shadow scoring's Tune callback, when the search ends with a test scoring (search.test_top_k > 0)."""
    import os

    if os.environ.get(OFF_VARIABLE, "").strip().lower() == "off":
        return []
    return [ShadowScoring(experiment.uri)] if spec.search.test_top_k > 0 and spec.data.has_test else []
