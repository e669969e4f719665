from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuner.backends import load_base
from tuner.quality import METRIC, PreferenceAccuracy, base_model_metrics

PAIRS = [
    {"prompt": "What is the first planet?", "chosen": "Mercury.", "rejected": "Neptune is the first planet."},
    {"prompt": "Colour of the sky?", "chosen": "Blue, because of Rayleigh scattering.", "rejected": "Green."},
    {"prompt": "2 + 2?", "chosen": "4", "rejected": "It depends on many factors, really."},
    {"prompt": "Capital of France?", "chosen": "Paris is the capital.", "rejected": "Lyon."},
    {"prompt": "Boiling point of water?", "chosen": "100 C at sea level.", "rejected": "50 C."},
]


def direct_mean_logp(model, tokenizer, prompt: str, answer: str) -> float:
    """One pair at a time, no padding: the definition written out."""
    user = [{"role": "user", "content": prompt}]
    prompt_ids = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=True)
    full_ids = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=True,
                                             return_dict=True)
    start, ids = len(prompt_ids["input_ids"]), torch.tensor([full_ids["input_ids"]])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    token_logps = logps.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
    return float(token_logps[start - 1 :].mean())


def test_preference_accuracy_equals_a_direct_computation(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    expected = sum(direct_mean_logp(model, tokenizer, p["prompt"], p["chosen"]) >
                   direct_mean_logp(model, tokenizer, p["prompt"], p["rejected"]) for p in PAIRS) / len(PAIRS)
    scored = PreferenceAccuracy(tokenizer, Dataset.from_list(PAIRS), max_length=128, batch_size=2)(model)
    assert scored == {METRIC: pytest.approx(expected)}
    base = load_base(str(tiny_llama))
    assert base_model_metrics(base, Dataset.from_list(PAIRS), 128) == {METRIC: pytest.approx(expected)}


def test_pairs_truncated_to_nothing_are_skipped(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    scorer = PreferenceAccuracy(tokenizer, Dataset.from_list(PAIRS), max_length=8)
    assert scorer.pairs == [] and scorer(None) == {}


def test_training_mode_is_restored(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).train()
    PreferenceAccuracy(tokenizer, Dataset.from_list(PAIRS[:2]), max_length=128)(model)
    assert model.training
