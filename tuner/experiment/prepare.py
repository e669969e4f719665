"""The experiment's preparation, once per search: the split pairs saved, DPO's reference log-probs computed once
when every trial can share them, and the base model's scores on the eval pairs (tuner.experiment.folder's layout)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from tuner.experiment.folder import BY_MODEL, Experiment
from tuner.spec import Spec


def prepare(spec: Spec, experiment: Experiment, train, held_out, test=None) -> list[str]:
    """Everything every trial needs and no trial should redo; returns lines for the user. `test`, the test split, is
    only saved: nothing in the search reads it. Starts over from what an unfinished preparation left, and marks the
    folder prepared (`experiment.prepared_file`) last."""
    from tuner.evidence import quality

    experiment.forget_preparation()

    available = len(train)
    consumed = spec.rows_consumed()
    if consumed is not None and consumed < available:
        # Pairs past this count are never seen by any trial: tokenizing them and running the reference over them
        # would be wasted. The pairs kept are the first of the seeded shuffle, so still a random sample.
        train = train.select(range(consumed))
    held_out = quality.with_pair_ids(held_out)  # pair ids that every trial's per-pair outcomes refer to
    held_out = _by_prompt(held_out)
    train.save_to_disk(str(experiment.data_dir / "train"))
    held_out.save_to_disk(str(experiment.data_dir / "eval"))
    if test is not None:
        test = _by_prompt(quality.with_pair_ids(test))
        test.save_to_disk(str(experiment.test_dir))
    used = f" ({len(train)} used: train.max_steps x batch)" if len(train) < available else ""
    tested = (f", {len(test)} test pairs scored only when the search ends (no prompt in two splits)"
              if test is not None else " (no prompt in both; no test split)")
    lines = [f"data: {available} train pairs{used}, {len(held_out)} eval pairs{tested}"]
    # One pass of each base model over the pairs gives DPO's shared reference and the base model's scores on the
    # eval pairs (the reference log-probs are the base model's log-probs); without a shared reference, it runs over
    # the eval pairs only. The test pairs are not run through any model before the search ends: the base model is
    # scored on them then, with the top trials (tuner.evidence.scoring), so that no trial waits for it.
    # tuner.passes runs them as Ray tasks where the trials run, or reuses them from an earlier search.
    from tuner.passes import tasks

    by_model, more = tasks.prepare_passes(spec, experiment, train, held_out, _described)
    lines += more
    _write_base(experiment, by_model)
    _mark_prepared(experiment)
    return lines


def _by_prompt(pairs):
    """The pairs of one prompt side by side: a batch then runs each prompt once for all its answers
    (tuner.trial.logprobs), which makes a pass over many pairs per prompt about 30% cheaper (eval rounds, test
    scoring)."""
    prompts = [str(prompt) for prompt in pairs["prompt"]]
    return pairs.select(sorted(range(len(pairs)), key=prompts.__getitem__))


def _mark_prepared(experiment: Experiment) -> None:
    experiment.prepared_file.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    experiment.publish(experiment.prepared_file)


def _write_base(experiment: Experiment, by_model: dict) -> None:
    """base_metrics.json, base_outcomes.json and base_scores.json (the eval pairs): the one base model's, or keyed
    by model name under BY_MODEL when model.name is searched. `by_model`: model name -> PairScores."""
    def keyed(values: dict) -> dict:
        return next(iter(values.values())) if len(values) == 1 else {BY_MODEL: values}

    guards = experiment.spec.search.guard_groups
    experiment.base_metrics_file.write_text(json.dumps(keyed({n: s.metrics(guard_groups=guards)
                                                              for n, s in by_model.items()})))
    experiment.base_outcomes_file.write_text(json.dumps(keyed({n: s.outcomes(guards) for n, s in by_model.items()})))
    experiment.base_scores_file.write_text(json.dumps(keyed({n: asdict(s) for n, s in by_model.items()})))
    experiment.publish(experiment.data_dir, experiment.base_metrics_file, experiment.base_outcomes_file,
                       experiment.base_scores_file)  # once; in object storage only


def _described(metrics: dict[str, float]) -> str:
    """The base model's eval measures in one line: the selection measures, then the accuracy per group."""
    overall = ", ".join(f"{k} = {v:.3f}" for k, v in metrics.items() if "/" not in k)
    groups = [f"{k.split('/', 1)[1]} {v:.2f}" for k, v in metrics.items() if "/" in k]
    return overall + (f" (per group: {', '.join(groups)})" if groups else "")
