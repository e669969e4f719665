"""One forward pass per eval: TRL's eval metrics, the preference accuracy and the drift all come from it, and equal
what TRL's own eval and a direct pass per pair compute (on the tiny model)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.tuner.evidence.test_quality import direct_accuracy
from tuner.trial import backends, evaluation, methods, reference
from tuner.data.loading import as_conversation, load_pairs, load_prepared
from tuner.trial.evaluation import PairEvaluation
from tuner.trial.logprobs import answer_log_probs
from tuner.evidence.quality import DRIFT, METRIC, pair_ids, with_pair_ids
from tuner.spec import validate_spec
from tuner.trial.trainable import build_trainer

# Eval metrics that measure time, not the model.
TIMINGS = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_model_preparation_time"}


def tiny_spec(tiny_llama, method: str = "dpo"):
    return validate_spec({
        "model": {"name": str(tiny_llama), "max_length": 64, "backend": "hf"},
        "method": method,
        "data": {"max_rows": 8, "max_eval_rows": 6},
        "train": {"max_steps": 2, "eval_steps": 2, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 4,
                  "learning_rate": 1e-2, "seed": 0, "beta": 0.2},
    })


@pytest.fixture(scope="module")
def prepared(tiny_llama, tmp_path_factory):
    """The driver's work: split pairs with ids, the shared reference and the base model's scores from it."""
    spec = tiny_spec(tiny_llama)
    splits = load_pairs(spec.data)
    train, held_out = splits.train, splits.eval
    held_out = with_pair_ids(held_out)
    folder = tmp_path_factory.mktemp("reference")
    base = reference.precompute(spec, backends.load_base(str(tiny_llama)), train, held_out, folder)
    return train, held_out, folder, base


def assert_same_metrics(ours: dict, theirs: dict, keys) -> None:
    assert keys, "nothing compared"
    for key in keys:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-4), key


@pytest.mark.parametrize("method", ["dpo", "ipo"])  # IPO: DPO's trainer and reference, TRL's IPO loss
def test_dpo_eval_in_one_pass_equals_trls_eval_and_the_direct_accuracy(tiny_llama, prepared, tmp_path, method):
    spec = tiny_spec(tiny_llama, method)
    _, held_out, folder, base = prepared
    shared_train, shared_eval = load_prepared(folder)
    pairs = PairEvaluation(base=base)
    trainer = build_trainer(spec, backends.load("hf", str(tiny_llama), spec), shared_train, shared_eval,
                            str(tmp_path), [], on_gpu=False, shared_reference=True, pair_evaluation=pairs)
    assert trainer.args.loss_type == (["ipo"] if method == "ipo" else ["sigmoid"])

    untrained = trainer.evaluate()  # LoRA starts as the identity: the policy is the reference, the base model
    assert untrained[METRIC] == pytest.approx(base.accuracy()[METRIC])
    # each loss at a zero log-ratio margin: DPO's -log sigmoid(0), IPO's (0 - 1/(2 tau))^2
    assert untrained["eval_loss"] == pytest.approx(math.log(2) if method == "dpo" else (1 / (2 * 0.2)) ** 2, rel=1e-4)
    assert untrained[DRIFT] == pytest.approx(0, abs=1e-6)
    assert pairs.outcomes() == base.outcomes()

    trainer.train()
    ours = trainer.evaluate()
    ours_outcomes = pairs.outcomes()
    pairs.fast = False  # TRL's own forward and metrics (recorded, so the pair measures are still there)
    theirs = trainer.evaluate()
    assert {"eval_entropy", "eval_mean_token_accuracy", "eval_logits/chosen"} <= set(theirs)
    assert not {"eval_entropy", "eval_mean_token_accuracy", "eval_logits/chosen"} & set(ours)
    assert_same_metrics(ours, theirs, [k for k in ours if k not in TIMINGS])
    assert abs(ours[DRIFT]) > 1e-4 and ours["eval_rewards/margins"] != 0

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    expected, outcomes = direct_accuracy(trainer.model.eval(), tokenizer, held_out, spec.model.max_length)
    assert ours[METRIC] == pytest.approx(expected)
    assert ours_outcomes == outcomes
    assert sum(ours_outcomes["correct"]) / len(ours_outcomes["correct"]) == pytest.approx(ours[METRIC])


def test_dpo_training_steps_through_the_shared_prompt_forward_equal_trls(tiny_llama, prepared, tmp_path):
    """Same losses, reward metrics and adapter weights as TRL's own forward, step by step (on a CPU)."""
    spec = tiny_spec(tiny_llama)
    _, _, folder, base = prepared
    shared_train, shared_eval = load_prepared(folder)
    runs = {}
    for fast in (True, False):
        trainer = build_trainer(spec, backends.load("hf", str(tiny_llama), spec), shared_train, shared_eval,
                                str(tmp_path / str(fast)), [], on_gpu=False, shared_reference=True,
                                pair_evaluation=PairEvaluation(fast=fast, base=base))
        trainer.train()
        weights = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}
        runs[fast] = ([log for log in trainer.state.log_history if "loss" in log], weights)
    (ours, our_weights), (theirs, their_weights) = runs[True], runs[False]
    assert len(ours) == len(theirs) == 2
    for mine, trl in zip(ours, theirs):
        assert_same_metrics(mine, trl, ["loss", "rewards/margins", "rewards/chosen", "logps/rejected", "grad_norm"])
        assert "entropy" in trl and "entropy" not in mine
    assert our_weights.keys() == their_weights.keys()
    for name, weight in our_weights.items():
        # Adam turns float-rounding noise in near-zero gradients into steps: 1e-4 is 1% of this learning rate.
        assert torch.allclose(weight, their_weights[name], atol=1e-4), name


def test_orpo_eval_scores_the_same_answer_tokens_and_keeps_trls_metrics(tiny_llama, prepared, tmp_path):
    spec = tiny_spec(tiny_llama, "orpo")
    train, held_out, _, base = prepared
    train, eval_pairs = as_conversation(train), as_conversation(held_out)
    loaded = backends.load("hf", str(tiny_llama), spec)
    stock = methods.trainer_class("orpo")(
        model=loaded.model, args=methods.training_args(spec, str(tmp_path / "stock"), on_gpu=False),
        train_dataset=train, eval_dataset=eval_pairs, processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config)
    theirs = stock.evaluate()

    pairs = PairEvaluation(base=base)
    trainer = build_trainer(spec, backends.load("hf", str(tiny_llama), spec), train, eval_pairs,
                            str(tmp_path / "ours"), [], on_gpu=False, pair_evaluation=pairs)
    ours = trainer.evaluate()
    # the fast eval computes TRL's loss and metrics from answer log-probs, all but the mean logits over every position
    logit_metrics = {f"eval_{name}" for name in evaluation.ORPO_LOGIT_METRICS}
    assert_same_metrics(ours, theirs, [k for k in theirs if k.startswith("eval_") and k not in TIMINGS | logit_metrics])
    assert not logit_metrics & set(ours) and logit_metrics <= set(theirs)
    pairs.fast = False  # TRL's own forward, recorded: the same numbers, the logits back
    recorded = trainer.evaluate()
    assert_same_metrics(recorded, theirs, [k for k in theirs if k.startswith("eval_") and k not in TIMINGS])
    assert_same_metrics(recorded, ours, [METRIC, DRIFT, "eval_pref_margin"])
    pairs.fast = True
    # ORPO appends an EOS to each answer; the preference measures leave it out and score DPO's tokens.
    assert ours[METRIC] == pytest.approx(base.accuracy()[METRIC])
    assert ours[DRIFT] == pytest.approx(0, abs=1e-6)

    trainer.train()
    trained = trainer.evaluate()
    expected, outcomes = direct_accuracy(trainer.model.eval(), AutoTokenizer.from_pretrained(tiny_llama), held_out,
                                         spec.model.max_length)
    assert trained[METRIC] == pytest.approx(expected)
    assert pairs.outcomes() == outcomes
    assert abs(trained[DRIFT]) > 1e-4


def test_extra_metrics_are_computed_only_when_ranked_on():
    assert evaluation.keeps_extra_metrics(["eval_entropy"])
    assert evaluation.keeps_extra_metrics(["eval_mean_token_accuracy"])
    assert not evaluation.keeps_extra_metrics(["eval_pref_accuracy", "eval_rewards/margins"])


def test_answer_log_probs_equal_the_full_forward(tiny_llama):
    """Answers sharing a prompt, answers of one token, a row with no answer, then left padding (the full path)."""
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    add_fused_lm_head(model)
    generator = torch.Generator().manual_seed(0)
    prompt_a, prompt_b = (torch.randint(3, 1000, (n,), generator=generator).tolist() for n in (5, 9))
    rows = [(prompt_a, 4), (prompt_a, 1), (prompt_b, 7), (prompt_b, 2), (prompt_a, 12), (prompt_b, 0)]
    width = max(len(p) + n for p, n in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for i, (prompt, answer) in enumerate(rows):
        tokens = prompt + torch.randint(3, 1000, (answer,), generator=generator).tolist()
        ids[i, : len(tokens)], mask[i, : len(tokens)] = torch.tensor(tokens), 1
        labels[i, len(prompt) : len(tokens)] = ids[i, len(prompt) : len(tokens)]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).log_probs
    got = answer_log_probs(model, ids, mask, labels)
    assert got.shape == expected.shape and (got[labels[:, 1:] == -100] == 0).all()
    assert torch.allclose(got, expected, atol=1e-5)

    left = torch.stack([torch.roll(r, int((m == 0).sum())) for r, m in zip(ids, mask)])
    left_mask = torch.stack([torch.roll(m, int((m == 0).sum())) for m in mask])
    left_labels = torch.stack([torch.roll(r, int((m == 0).sum())) for r, m in zip(labels, mask)])
    with torch.no_grad():
        expected = model(input_ids=left, attention_mask=left_mask, labels=left_labels, fused_lm_head=True).log_probs
    assert torch.allclose(answer_log_probs(model, left, left_mask, left_labels), expected, atol=1e-5)


def test_the_eval_reports_each_group_the_margin_and_the_guard_from_its_one_pass(tiny_llama, prepared, tmp_path):
    from tuner.evidence.quality import GUARD, GUARD_BROKEN, MARGIN

    spec = tiny_spec(tiny_llama)
    _, held_out, folder, base = prepared
    shared_train, shared_eval = load_prepared(folder)
    assert base.groups == [str(g) for g in held_out["group"]]  # the driver's pass keeps each pair's group
    pairs = PairEvaluation(base=base, guard_groups=("wrong_fact",))
    trainer = build_trainer(spec, backends.load("hf", str(tiny_llama), spec), shared_train, shared_eval,
                            str(tmp_path), [], on_gpu=False, shared_reference=True, pair_evaluation=pairs)
    untrained = trainer.evaluate()
    groups = sorted(set(held_out["group"]))
    assert {f"eval_pref_accuracy/{g}" for g in groups} <= set(untrained)
    # the policy is the base model: the selection measures are the base model's outside the guard, guard intact
    assert untrained[METRIC] == pytest.approx(base.accuracy(["wrong_fact"])[METRIC])
    assert untrained[MARGIN] == pytest.approx(base.accuracy(["wrong_fact"])[MARGIN], abs=1e-5)
    assert untrained[f"{GUARD}/wrong_fact"] == 0 and untrained[GUARD_BROKEN] == 0
    kept = pairs.outcomes()
    assert len(kept["pairs"]) == len(held_out) - held_out["group"].count("wrong_fact")


def test_simpo_eval_keeps_trls_metrics_and_scores_the_same_answer_tokens(tiny_llama, prepared, tmp_path):
    """SimPO through TRL's CPOTrainer (loss_type simpo, no reference): TRL's own eval metrics, to 1e-4, and the
    pairs scored on DPO's answer tokens, so the base model's accuracy is where an untrained adapter starts."""
    spec = validate_spec({**tiny_spec(tiny_llama, "simpo").model_dump(mode="json"),
                          "train": {**tiny_spec(tiny_llama).train, "beta": 2.0, "simpo_gamma": 0.5}})
    train, held_out, _, base = prepared
    train, eval_pairs = as_conversation(train), as_conversation(held_out)
    loaded = backends.load("hf", str(tiny_llama), spec)
    args = methods.training_args(spec, str(tmp_path / "stock"), on_gpu=False)
    assert (args.loss_type, args.cpo_alpha, args.simpo_gamma) == ("simpo", 0.0, 0.5)
    stock = methods.trainer_class("simpo")(
        model=loaded.model, args=args, train_dataset=train, eval_dataset=eval_pairs,
        processing_class=loaded.tokenizer, peft_config=loaded.peft_config)
    theirs = stock.evaluate()

    pairs = PairEvaluation(base=base)
    trainer = build_trainer(spec, backends.load("hf", str(tiny_llama), spec), train, eval_pairs,
                            str(tmp_path / "ours"), [], on_gpu=False, pair_evaluation=pairs)
    ours = trainer.evaluate()
    assert_same_metrics(ours, theirs, [k for k in theirs if k.startswith("eval_") and k not in TIMINGS])
    # what the method says its trials report, so that a search can rank on it
    assert "eval_rewards/margins" in ours and {k for k in theirs if k.startswith("eval_")} <= \
        methods.get("simpo").eval_metrics | TIMINGS
    assert ours[METRIC] == pytest.approx(base.accuracy()[METRIC])
    assert ours[DRIFT] == pytest.approx(0, abs=1e-6)

    trainer.train()
    trained = trainer.evaluate()
    expected, outcomes = direct_accuracy(trainer.model.eval(), AutoTokenizer.from_pretrained(tiny_llama), held_out,
                                         spec.model.max_length)
    assert trained[METRIC] == pytest.approx(expected)
    assert pairs.outcomes() == outcomes
    assert abs(trained[DRIFT]) > 1e-4
