"""Preference accuracy and drift from per-pair scores, and the base model's scores from the driver's reference pass."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuner.trial import reference
from tuner.trial.backends import load_base
from tuner.evidence.quality import DRIFT, GUARD, GUARD_BROKEN, MARGIN, METRIC, PairScores, guard_broken, pair_ids, with_pair_ids
from tuner.spec import validate_spec

PAIRS = [
    {"prompt": "What is the first planet?", "chosen": "Mercury.", "rejected": "Neptune is the first planet."},
    {"prompt": "Colour of the sky?", "chosen": "Blue, because of Rayleigh scattering.", "rejected": "Green."},
    {"prompt": "2 + 2?", "chosen": "4", "rejected": "It depends on many factors, really."},
    {"prompt": "Capital of France?", "chosen": "Paris is the capital.", "rejected": "Lyon."},
    {"prompt": "Boiling point of water?", "chosen": "100 C at sea level.", "rejected": "50 C."},
]


def direct_mean_logp(model, tokenizer, prompt: str, answer: str, max_length: int | None = None) -> float | None:
    """One pair at a time, no padding, full logits: the definition written out (tuner's pre-one-pass evaluator).
    With `max_length`, prompt and answer are cut to their first max_length tokens as TRL cuts them; None when no
    answer token is left."""
    user = [{"role": "user", "content": prompt}]
    prompt_ids = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=True)
    full_ids = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=True,
                                             return_dict=True)["input_ids"][:max_length]
    start, ids = len(prompt_ids["input_ids"]), torch.tensor([full_ids])
    if len(full_ids) <= start:
        return None
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    token_logps = logps.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
    return float(token_logps[start - 1 :].mean())


def direct_accuracy(model, tokenizer, pairs, max_length: int | None = None) -> tuple[float, dict]:
    """The share of pairs right by the definition, and the outcomes {"pairs": [ids of the pairs scored],
    "correct": [0/1, ...]} (a pair whose answer max_length cuts away entirely is not scored)."""
    ids = pair_ids(pairs) if hasattr(pairs, "column_names") else list(range(len(pairs)))
    scored, correct = [], []
    for pair_id, p in zip(ids, pairs):
        chosen = direct_mean_logp(model, tokenizer, p["prompt"], p["chosen"], max_length)
        rejected = direct_mean_logp(model, tokenizer, p["prompt"], p["rejected"], max_length)
        if chosen is not None and rejected is not None:
            scored.append(pair_id)
            correct.append(int(chosen > rejected))
    return sum(correct) / len(correct), {"pairs": scored, "correct": correct}


def tiny_spec(tiny_llama, max_length=128):
    return validate_spec({"model": {"name": str(tiny_llama), "max_length": max_length, "backend": "hf"},
                          "train": {"per_device_eval_batch_size": 2}})


def test_base_scores_from_the_reference_pass_equal_a_direct_base_model_pass(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    expected, outcomes = direct_accuracy(model, tokenizer, PAIRS)
    scores = reference.base_scores(tiny_spec(tiny_llama), load_base(str(tiny_llama)), Dataset.from_list(PAIRS))
    assert scores.pairs == [0, 1, 2, 3, 4]
    for i, pair in enumerate(PAIRS):
        assert scores.chosen_logps[i] / scores.chosen_tokens[i] == pytest.approx(
            direct_mean_logp(model, tokenizer, pair["prompt"], pair["chosen"]), abs=1e-4)
        assert scores.rejected_logps[i] / scores.rejected_tokens[i] == pytest.approx(
            direct_mean_logp(model, tokenizer, pair["prompt"], pair["rejected"]), abs=1e-4)
    assert scores.accuracy()[METRIC] == pytest.approx(expected)
    assert scores.outcomes() == outcomes


def test_base_scores_use_the_datas_pair_ids_and_skip_pairs_truncated_to_nothing(tiny_llama):
    with_ids = Dataset.from_list([{**p, "pair_id": f"q{i}"} for i, p in enumerate(PAIRS)])
    scores = reference.base_scores(tiny_spec(tiny_llama), load_base(str(tiny_llama)), with_ids)
    assert scores.pairs == ["q0", "q1", "q2", "q3", "q4"]
    # The chat template's system prompt alone is longer than 16 tokens: no answer token is left to score.
    truncated = reference.base_scores(tiny_spec(tiny_llama, max_length=16), load_base(str(tiny_llama)), with_ids)
    assert truncated.accuracy() == {} and truncated.outcomes() == {"pairs": [], "correct": []}


def fabricated(pairs=("a", "b", "c"), chosen=(-2.0, -9.0, -4.0), rejected=(-6.0, -3.0, -4.0),
               chosen_tokens=(2, 3, 4), rejected_tokens=(3, 3, 2)) -> PairScores:
    return PairScores(list(pairs), list(chosen), list(rejected), list(chosen_tokens), list(rejected_tokens))


def test_accuracy_compares_means_per_token_not_sums():
    scores = fabricated()  # means: a -1 vs -2 (right), b -3 vs -1 (wrong), c -1 vs -2 (right; sums tie)
    assert scores.correct() == [1, 0, 1]
    assert scores.accuracy() == {METRIC: pytest.approx(2 / 3), MARGIN: pytest.approx((1 - 2 + 1) / 3)}
    assert scores.outcomes() == {"pairs": ["a", "b", "c"], "correct": [1, 0, 1]}


def test_pairs_without_tokens_are_left_out():
    scores = fabricated(chosen_tokens=(2, 0, 4))
    assert scores.outcomes() == {"pairs": ["a", "c"], "correct": [1, 1]}
    assert scores.accuracy()[METRIC] == 1.0
    assert PairScores().accuracy() == {}


def test_drift_is_the_mean_per_token_log_ratio_over_matching_pairs():
    reference_scores = fabricated()
    assert reference_scores.drift(reference_scores) == {DRIFT: 0.0, f"{DRIFT}_chosen": 0.0, f"{DRIFT}_rejected": 0.0}
    policy = fabricated(chosen=(-1.0, -6.0, -4.0), rejected=(-9.0, -3.0, -8.0))
    # chosen: (+1 +3 +0) over 2+3+4 tokens; rejected: (-3 +0 -4) over 3+3+2 tokens
    assert policy.drift(reference_scores) == {DRIFT: pytest.approx((4 - 7) / 17),
                                              f"{DRIFT}_chosen": pytest.approx(4 / 9),
                                              f"{DRIFT}_rejected": pytest.approx(-7 / 8)}
    # A pair scored on other tokens (another max_length) or missing from the reference says nothing.
    other = fabricated(pairs=("a", "b", "z"), chosen_tokens=(2, 5, 4))
    assert policy.drift(other) == {DRIFT: pytest.approx((1 - 3) / 5), f"{DRIFT}_chosen": pytest.approx(1 / 2),
                                   f"{DRIFT}_rejected": pytest.approx(-3 / 3)}
    assert policy.drift(PairScores()) == {}


def test_metrics_take_the_prefix_of_the_split_and_scores_round_trip(tmp_path):
    policy, base = fabricated(chosen=(-1.0, -6.0, -4.0)), fabricated()
    assert set(policy.metrics(base)) == {METRIC, MARGIN, DRIFT, f"{DRIFT}_chosen", f"{DRIFT}_rejected"}
    assert set(policy.metrics(None, prefix="test")) == {"test_pref_accuracy", "test_pref_margin"}
    policy.write(tmp_path / "scores.json")
    assert PairScores.read(tmp_path / "scores.json") == policy


def test_pair_ids_come_from_the_data_or_the_row_index():
    plain = Dataset.from_list(PAIRS[:2])
    assert pair_ids(plain) == [0, 1]
    assert with_pair_ids(plain)["pair_id"] == [0, 1]
    named = Dataset.from_list([{**PAIRS[0], "pair_id": "x"}])
    assert pair_ids(named) == ["x"] and with_pair_ids(named)["pair_id"] == ["x"]


def test_a_nan_log_likelihood_is_never_scored_as_a_number():
    """NaN compares as False: without the check a diverged model scores 0.0, a number that gets ranked."""
    scored = fabricated(chosen=(-2.0, float("nan"), -4.0)).accuracy()
    assert list(scored) == [METRIC, MARGIN] and scored[METRIC] != scored[METRIC]  # NaN


def test_pair_lengths_say_which_max_length_keeps_an_answer(tiny_llama):
    from tuner.evidence.quality import pair_lengths

    lengths = pair_lengths(AutoTokenizer.from_pretrained(tiny_llama), Dataset.from_list(PAIRS))
    base = load_base(str(tiny_llama))
    for (needed, whole), row in zip(lengths, PAIRS):
        assert needed < whole
        at = reference.base_scores(tiny_spec(tiny_llama, max_length=needed), base, Dataset.from_list([row]))
        below = reference.base_scores(tiny_spec(tiny_llama, max_length=needed - 1), base, Dataset.from_list([row]))
        assert len(at.scored()) == 1 and below.scored() == []


def grouped(margins: list[float], groups: list[str], tokens: int = 2) -> PairScores:
    """Scores whose per-pair margin (chosen minus rejected mean log-likelihood) is `margins`."""
    n = len(margins)
    return PairScores([f"p{i}" for i in range(n)], [tokens * m for m in margins], [0.0] * n, [tokens] * n,
                      [tokens] * n, list(groups))


def test_the_margin_separates_what_accuracy_ties():
    small, large = grouped([0.1, 0.2, -0.1], "aaa"), grouped([0.5, 0.9, -0.05], "aaa")
    assert small.accuracy()[METRIC] == large.accuracy()[METRIC] == pytest.approx(2 / 3)
    assert large.accuracy()[MARGIN] > small.accuracy()[MARGIN]
    assert large.accuracy()[MARGIN] == pytest.approx((0.5 + 0.9 - 0.05) / 3)


def test_guard_groups_leave_the_search_metric_and_are_compared_with_the_base_model():
    groups = ["style"] * 4 + ["fact"] * 8
    base = grouped([-1, -1, 1, 1] + [1] * 8, groups)
    # style: all four right now; fact: 6 of 8 broken, none fixed
    policy = grouped([1, 1, 1, 1] + [1, 1] + [-1] * 6, groups)
    metrics = policy.metrics(base, guard_groups=["fact"])
    assert metrics[METRIC] == 1.0  # the style pairs only
    assert metrics[f"{METRIC}/fact"] == 0.25 and metrics[f"{METRIC}/style"] == 1.0
    assert metrics[f"{GUARD}/fact"] == pytest.approx(-0.75)
    assert metrics[GUARD_BROKEN] == 1.0
    assert policy.outcomes(["fact"]) == {"pairs": ["p0", "p1", "p2", "p3"], "correct": [1, 1, 1, 1]}
    # the same policy with no fact pair lost, and weaker margins on half of them
    holding = grouped([1, 1, 1, 1] + [1] * 4 + [0.5] * 4, groups)
    assert holding.metrics(base, guard_groups=["fact"])[GUARD_BROKEN] == 0.0
    # without guard groups every pair counts and nothing is guarded
    assert GUARD_BROKEN not in policy.metrics(base) and policy.metrics(base)[METRIC] == pytest.approx(6 / 12)


def outcomes_as_margins(outcomes) -> list[float]:
    return [0.5 if right else -0.5 for right in outcomes]


def test_a_guard_breaks_on_a_net_loss_past_its_tolerance_or_clearly_more_pairs_lost_than_won():
    def broken(trial, base):
        return guard_broken(outcomes_as_margins(trial), outcomes_as_margins(base))

    assert not broken([1] * 40, [1] * 40)
    assert not broken([0, 0] + [1] * 38, [1] * 40)  # 2 of 40 lost: within 5% of the pairs
    assert broken([0, 0, 0] + [1] * 37, [1] * 40)  # 3 of 40 lost: past it
    assert not broken([0, 0, 0, 1] + [1] * 36, [1, 1, 1, 0] + [1] * 36)  # 3 lost, 1 won: net 2
    many = 1000  # on many pairs, a net loss within the tolerance that a sign test calls clear breaks it too
    assert broken([0] * 30 + [1] * (many - 30), [1] * (many - 10) + [0] * 10)
    assert broken([0] * 5 + [1] * 5, [1] * 9 + [0])  # 5 lost, 1 won: net 4 of 10
    assert not broken([1] * 5, [0] * 5)  # better is never broken
    assert not guard_broken([], [])


def test_a_guard_breaks_when_its_margins_fall_clearly_before_any_pair_changes_side():
    base = [0.5] * 10
    assert guard_broken([0.4] * 10, base)  # every preference weaker by 20%: p = 1/1024
    assert not guard_broken([0.4] * 6 + [0.6] * 4, base)  # as many ways as chance gives
    assert not guard_broken([0.7] * 10, base)  # stronger is never broken
    assert not guard_broken([0.49] * 9 + [5.0], base)  # fell on most, but rose in the mean
    assert not guard_broken([0.49] * 10, base)  # fell on every pair, by 2% of the margins: too little to matter
