"""Scoring on the test split, once per model: the base model and the adapters of the top trials (by the search
metric), when a search ends and whenever `python -m analysis` or `tuner.export` needs a model not scored yet.

Each model's per-pair log-likelihoods are kept in `tuner/test_scores.json` (one entry per checkpoint and per base
model), so a model is scored once however often the results are read; tuner.evidence.verdict turns them into the
headline, the per-group table and the regressions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from tuner.experiment.folder import Experiment
from tuner.experiment.ranking import Best
from tuner.evidence.verdict import Scored, ScoredSplit
from tuner.trial import methods

BASE_LABEL = "base model"


def score_pairs(spec, loaded, pairs) -> tuple[list[float], list[float]]:
    """Mean per-token log-likelihood of each pair's chosen and rejected answer (in the order of `pairs`), NaN for a
    pair not scored (its answer truncated away): the one scoring the eval pairs and the base model get (TRL's
    tokenization, tuner.trial.reference's pass). `loaded`: a model and its tokenizer (backends.load_base), an adapter
    merged into it."""
    from tuner.trial import reference
    from tuner.evidence.quality import pair_ids, with_pair_ids

    pairs = with_pair_ids(pairs)
    return reference.base_scores(spec, loaded, pairs).means(pair_ids(pairs))


def candidates(experiment: Experiment, top_k: int) -> list[Best]:
    """The top `top_k` trials by the search's own ranking, each with the checkpoint of its ranked report."""
    ranked = experiment.ranking()
    ranked = ranked[ranked["rank"] <= top_k]
    found = [experiment.best(trial_id=trial_id) for trial_id in ranked["trial_id"]]
    return [best for best in found if best is not None and best.checkpoint is not None]


def score_test_split(experiment: Experiment, top_k: int | None = None, say: Callable[[str], None] = print,
                 include: list[Best] | None = None) -> ScoredSplit | None:
    """The base model and the top trials scored on the test split (scoring those not scored yet), or None when the
    experiment has no test split or `top_k` (default search.test_top_k) is 0. `include` adds trials (e.g. the one
    being exported) after the top ones."""
    from datasets import load_from_disk

    top_k = experiment.spec.search.test_top_k if top_k is None else top_k
    if top_k <= 0 or not experiment.has_test_split:
        return None
    test = load_from_disk(str(experiment.local_copy(experiment.test_dir)))
    trials = candidates(experiment, top_k)
    searched = experiment.spec.searched_methods()
    # A search across methods: each method's best is scored too, for the table of methods on the test split.
    method_bests = [best for method in searched if len(searched) > 1
                    if (best := experiment.best(method=method)) is not None and best.checkpoint is not None]
    for best in [*(include or []), *method_bests]:
        if all(best.checkpoint != t.checkpoint for t in trials):
            trials.append(best)
    baseline = experiment.best(baseline=True)  # the user's own settings (search.baseline), beside the winner
    if baseline is not None and (baseline.checkpoint is None
                                 or any(best.checkpoint == baseline.checkpoint for best in trials)):
        baseline = None  # none kept, or asked for by name (`include`): then it is one of the trials
    ids = [str(i) for i in test["pair_id"]] if "pair_id" in test.column_names else [str(i) for i in range(len(test))]
    cache = _read_cache(experiment.test_scores_file, ids)
    keys = {_trial_key(experiment, best): best for best in trials}
    baseline_key = _trial_key(experiment, baseline) if baseline is not None else None
    if baseline is not None:
        keys[baseline_key] = baseline
    model_name = _model_name(experiment, trials[0]) if trials else experiment.spec.model.name
    wanted = [f"base:{model_name}", *keys]
    missing = [key for key in wanted if key not in cache["models"]]
    if missing:
        say(f"scoring {len(missing) - (f'base:{model_name}' in missing)} trial(s)"
            f"{' and the base model' if f'base:{model_name}' in missing else ''} on {len(test)} test pairs ...")
        def done(key: str, entry: dict) -> None:  # kept as each model is done: an interrupted scoring keeps them
            cache["models"][key] = entry
            _write_cache(experiment.test_scores_file, cache)

        from tuner.passes import tasks as model_passes  # where the passes run: Ray tasks during a search, else this process

        runtime = model_passes.runtime_of(experiment)
        model_passes.score_test(experiment, test, [(key, keys.get(key)) for key in missing], model_name, done,
                                _score, _score_in_task, _Bases(runtime, experiment.spec.model.max_length))
        experiment.publish(experiment.test_scores_file)  # in object storage: scored once for every reader

    def scored(key: str, label: str, best: Best | None = None, settings: dict | None = None) -> Scored:
        entry = cache["models"][key]
        return Scored(label, _array(entry["chosen"]), _array(entry["rejected"]),
                      trial_id=best.trial_id if best else None, method=best.method if best else None,
                      step=best.step if best else None, checkpoint=str(best.checkpoint) if best else None,
                      settings=settings)

    columns = [c for c in ("pair_id", "prompt", "chosen", "rejected", "group") if c in test.column_names]
    pairs = test.select_columns(columns).to_pandas()
    for column in ("prompt", "chosen", "rejected"):
        pairs[column] = [_text(v) for v in pairs[column]]
    ranked = [scored(key, best.trial_id, best) for key, best in keys.items() if key != baseline_key]
    winner_method = ranked[0].method if ranked else experiment.spec.method
    learning_rate_key = next((key for key in experiment.spec.search.space
                              if methods.scoped(key) in ((None, "train.learning_rate"),
                                                         (winner_method, "train.learning_rate"))), None)
    best_checkpoints = {str(best.checkpoint): best.method for best in method_bests}
    return ScoredSplit(pairs, scored(f"base:{model_name}", BASE_LABEL), ranked,
                       experiment.spec.data.groups, tuple(experiment.spec.search.guard_groups),
                       learning_rate_key=learning_rate_key,
                       baseline=scored(baseline_key, "baseline", baseline,
                                       settings={k: baseline.config[k] for k in experiment.spec.search.space
                                                 if k in baseline.config}) if baseline is not None else None,
                       method_bests={best_checkpoints[t.checkpoint]: t for t in ranked
                                     if t.checkpoint in best_checkpoints})


class _Bases:
    """Each base model loaded once (as the experiment's passes load it: tuner.passes.tasks.runtime_of) for all the
    models scored; each model scored gets its own copy (a trial's adapter goes into the weights, and a trainer may
    change a model's settings), loading being the slow part. `single_use`: one model is scored (a Ray task), so
    no copy is made."""

    def __init__(self, runtime, max_length: int, single_use: bool = False):
        self.runtime, self.max_length, self.single_use = runtime, max_length, single_use
        self._loaded: dict[str, object] = {}

    def copy_of(self, name: str):
        import copy
        from dataclasses import replace

        from tuner.trial import backends, models

        if self.single_use:
            return backends.load_base(models.resolve(name), self.runtime, self.max_length)
        if name not in self._loaded:
            self._loaded[name] = backends.load_base(models.resolve(name), self.runtime, self.max_length)
        loaded = self._loaded[name]
        return replace(loaded, model=copy.deepcopy(loaded.model))


def _score(experiment: Experiment, test, best: Best | None, base_model_name: str, bases: _Bases) -> dict:
    """One model's entry of test_scores.json: the base model (best None), or a trial's adapter merged into its
    base, run over the test pairs once. The base model's log-probs here are the reference log-probs of the test
    pairs: no model reads those pairs before the search ends, so this is their one pass."""
    spec = experiment.spec
    if best is not None:
        from tuner.spec import with_sampled

        spec = with_sampled(spec, {k: v for k, v in best.config.items() if "." in k or k == "method"})
    name = spec.model.name if best is not None else base_model_name
    loaded = bases.copy_of(name)
    if best is not None:
        from peft import PeftModel

        adapter = PeftModel.from_pretrained(loaded.model, str(experiment.local_copy(best.checkpoint)))
        if bases.runtime.precision == "4bit":
            # Merging into 4-bit weights rounds the adapter away; the LoRA layers stay beside them instead, in the
            # model itself (not a PeftModel, whose adapter TRL's reference pass would switch off).
            loaded.model = adapter.get_base_model().eval()
        else:
            loaded.model = adapter.merge_and_unload().eval()  # a plain model: TRL's pass scores it, not its base
    chosen, rejected = score_pairs(spec, loaded, test)
    entry = {"model": name, "chosen": chosen, "rejected": rejected}
    if best is not None:
        entry.update(trial_id=best.trial_id, step=best.step, checkpoint=str(best.checkpoint))
    return entry


def _score_in_task(uri: str, spec, runtime, test, best: Best, base_model_name: str) -> dict:
    """`_score` in a Ray task (tuner.passes.tasks): the checkpoint is read from the experiment's storage there."""
    return _score(Experiment(uri, spec=spec), test, best, base_model_name,
                  _Bases(runtime, spec.model.max_length, single_use=True))


def _model_name(experiment: Experiment, best: Best) -> str:
    return str(best.config.get("model.name", experiment.spec.model.name))


def _trial_key(experiment: Experiment, best: Best) -> str:
    """The checkpoint relative to the experiment: the folder may move (or be read from a working copy)."""
    if isinstance(best.checkpoint, Path):
        try:
            return best.checkpoint.relative_to(experiment.path).as_posix()
        except ValueError:
            return str(best.checkpoint)
    return experiment.location.relative(best.checkpoint) or str(best.checkpoint)


def _read_cache(path: Path, ids: list[str]) -> dict:
    if path.is_file():
        cache = json.loads(path.read_text())
        if cache.get("pairs") == ids:
            return cache
    return {"pairs": ids, "models": {}}


def _write_cache(path: Path, cache: dict) -> None:
    def plain(values):
        return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]

    out = {"pairs": cache["pairs"], "models": {
        key: {**entry, "chosen": plain(entry["chosen"]), "rejected": plain(entry["rejected"])}
        for key, entry in cache["models"].items()}}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(out))
    temporary.replace(path)


def _array(values) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, np.ndarray)) and len(value) and isinstance(value[-1], dict):
        return str(value[-1].get("content", value))  # a conversation: its last turn
    return str(value)
