"""Reference log-probs computed once per search give the same training as computing them in the trial."""

from __future__ import annotations

import pytest
import torch

from tuner.trial import backends, reference
from tuner.data.loading import as_conversation, load_pairs, load_prepared
from tuner.spec import validate_spec
from tuner.trial.trainable import build_trainer


def tiny_spec(tiny_llama, **search):
    return validate_spec({
        "model": {"name": str(tiny_llama), "max_length": 64, "backend": "hf"},
        "data": {"max_rows": 8, "max_eval_rows": 4},
        "train": {"max_steps": 3, "eval_steps": 3, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 4,
                  "learning_rate": 1e-3, "seed": 0, "beta": 0.2},
        "search": search,
    })


def train_once(spec, tiny_llama, train, held_out, out, shared):
    torch.manual_seed(0)
    loaded = backends.load("hf", str(tiny_llama), spec)
    trainer = build_trainer(spec, loaded, train, held_out, str(out), [], on_gpu=False, shared_reference=shared)
    trainer.train()
    return trainer, trainer.state.log_history


def test_shared_reference_matches_in_trial_reference(tiny_llama, tmp_path):
    spec = tiny_spec(tiny_llama)
    splits = load_pairs(spec.data)
    train, held_out = splits.train, splits.eval
    base = reference.precompute(spec, backends.load_base(str(tiny_llama)), train, held_out,
                                tmp_path / "shared")
    shared_train, shared_eval = load_prepared(tmp_path / "shared")
    assert (len(shared_train), len(shared_eval)) == (8, 4)
    assert {"chosen_ids", "ref_chosen_logps", "ref_rejected_logps"} <= set(shared_train.column_names)
    # The base model's scores are the reference pass's sums: the eval columns, pair by pair.
    assert base.pairs == list(held_out["pair_id"])
    assert base.chosen_logps == pytest.approx(shared_eval["ref_chosen_logps"], abs=1e-4)
    assert base.rejected_logps == pytest.approx(shared_eval["ref_rejected_logps"], abs=1e-4)

    _, per_trial = train_once(spec, tiny_llama, as_conversation(train), as_conversation(held_out), tmp_path / "a",
                              shared=False)
    trainer, shared = train_once(spec, tiny_llama, shared_train, shared_eval, tmp_path / "b", shared=True)
    assert trainer.ref_model is None and trainer.precompute_ref_logps
    keys = ["loss", "rewards/margins", "eval_loss", "eval_rewards/margins", "eval_rewards/accuracies",
            "eval_logps/chosen", "eval_pref_accuracy", "eval_drift"]
    compared = 0
    for a, b in zip(per_trial, shared):
        for key in keys:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
                compared += 1
    assert compared >= 11


def test_the_reference_pass_runs_on_a_quantized_base(tiny_llama, monkeypatch):
    """The unsloth runtime's base is 4-bit with no adapter, which transformers' Trainer refuses to train: the pass
    does not train, so it runs (the check is real: a trainer on the same model is refused)."""
    from transformers import trainer_utils

    base = backends.load_base(str(tiny_llama))
    monkeypatch.setattr(type(base.model), "is_quantized", property(lambda self: True), raising=False)
    with pytest.raises(ValueError, match="purely quantized"):
        trainer_utils.validate_quantization_for_training(base.model)
    spec = tiny_spec(tiny_llama)
    scores = reference.base_scores(spec, base, load_pairs(spec.data).eval)
    assert len(scores.pairs) == 4 and all(v < 0 for v in scores.chosen_logps)


@pytest.mark.parametrize(("raw", "reason"), [
    ({}, None),
    ({"search": {"share_reference": False}}, "search.share_reference is off"),
    ({"method": "orpo"}, "no trial against a reference (DPO, IPO)"),
    ({"method": "ipo"}, None),  # IPO is DPO's trainer with its own loss: the same reference
    ({"method": "orpo", "search": {"space": {"method": {"type": "choice", "values": ["orpo", "ipo"]},
                                             "orpo.train.beta": {"type": "uniform", "low": 2, "high": 8}},
                                   "metric": "eval_pref_accuracy"}}, None),
    # unsloth: the pass loads the trials' own 4-bit base (backends.pass_runtime), so its reference is theirs
    ({"model": {"backend": "unsloth"}, "resources": {"gpu": 0.25}}, None),
    ({"search": {"space": {"model.max_length": {"type": "choice", "values": [64, 128]}}}}, "searched keys"),
    ({"search": {"space": {"train.max_length": {"type": "choice", "values": [64, 128]}}}}, "searched keys"),
    ({"search": {"space": {"train.beta": {"type": "uniform", "low": 0.1, "high": 0.5}}}}, None),
    # LD-DPO: ld_alpha weighs the reference's own log-probs, so each value needs its own reference
    ({"search": {"space": {"train.ld_alpha": {"type": "uniform", "low": 0.1, "high": 0.9}}}}, "searched keys"),
    ({"search": {"space": {"train.disable_dropout": {"type": "choice", "values": [True, False]}}}},
     "searched keys"),
    # loss variants only combine the log-probs: one reference serves them all
    ({"search": {"space": {"train.loss_type": {"type": "choice", "values": ["sigmoid", "ipo"]}}}}, None),
    # a key scoped to DPO's trials changes their reference as much as an unscoped one
    ({"search": {"space": {"dpo.train.ld_alpha": {"type": "uniform", "low": 0.1, "high": 0.9}}}},
     "searched keys"),
    ({"search": {"space": {"dpo.train.beta": {"type": "uniform", "low": 0.1, "high": 0.5}}}}, None),
])
def test_when_the_reference_can_be_shared(raw, reason):
    found = reference.why_not_shared(validate_spec(raw))
    assert (found is None) if reason is None else (reason in found)
