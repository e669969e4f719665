"""Test-split scoring: per-pair scores aligned with the pairs (NaN where a pair cannot be scored), the same numbers as
the eval's one scoring, and an adapter scored as itself (merged), not as its base model."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model

from tests.tuner.evidence.test_quality import PAIRS, direct_mean_logp, tiny_spec
from tuner.trial import reference
from tuner.trial.backends import load_base
from tuner.evidence.quality import PairScores
from tuner.evidence.scoring import score_pairs


def test_scores_line_up_with_the_pairs_and_equal_the_definition(tiny_llama):
    long_prompt = {"prompt": "word " * 200, "chosen": "too long", "rejected": "to score"}  # fills max_length
    pairs = Dataset.from_list([PAIRS[0], long_prompt, *PAIRS[1:]])
    loaded = load_base(str(tiny_llama))
    chosen, rejected = score_pairs(tiny_spec(tiny_llama, max_length=64), loaded, pairs)
    assert len(chosen) == len(rejected) == len(pairs)
    assert math.isnan(chosen[1]) and math.isnan(rejected[1])
    for index, pair in [(0, PAIRS[0]), *((i + 2, p) for i, p in enumerate(PAIRS[1:]))]:
        assert chosen[index] == pytest.approx(direct_mean_logp(loaded.model, loaded.tokenizer, pair["prompt"],
                                                               pair["chosen"]), abs=1e-4)
        assert rejected[index] == pytest.approx(direct_mean_logp(loaded.model, loaded.tokenizer, pair["prompt"],
                                                                 pair["rejected"]), abs=1e-4)


def test_a_merged_adapter_is_scored_as_itself(tiny_llama):
    spec = tiny_spec(tiny_llama)
    pairs = Dataset.from_list(PAIRS)
    base = score_pairs(spec, load_base(str(tiny_llama)), pairs)
    loaded = load_base(str(tiny_llama))
    adapter = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    expected = [direct_mean_logp(adapter, loaded.tokenizer, p["prompt"], p["chosen"]) for p in PAIRS]
    loaded.model = adapter.merge_and_unload().eval()
    chosen, _ = score_pairs(spec, loaded, pairs)
    assert chosen == pytest.approx(expected, abs=1e-4)
    assert max(abs(a - b) for a, b in zip(chosen, base[0])) > 1e-3  # not the base model's numbers


def test_means_follow_the_ids_asked_for():
    scores = PairScores(["a", "b", "c"], [-2.0, -9.0, -4.0], [-6.0, -3.0, -4.0], [2, 3, 0], [3, 3, 2])
    chosen, rejected = scores.means(["b", "zz", "a", "c"])
    assert chosen[0] == -3.0 and rejected[0] == -1.0 and chosen[2] == -1.0 and rejected[2] == -2.0
    assert all(math.isnan(v) for v in (chosen[1], rejected[1], chosen[3], rejected[3]))


def test_the_base_model_is_loaded_once_and_each_model_scored_as_itself(tiny_llama, tmp_path, monkeypatch):
    """At the end of a search the base model and the top trials' adapters are scored on the test pairs: the base
    model is loaded once for all of them, and merging an adapter does not change the base model's numbers."""
    from types import SimpleNamespace

    from tuner.trial import backends
    from tuner.evidence import scoring
    from tuner.experiment.ranking import Best

    spec = tiny_spec(tiny_llama)
    test = Dataset.from_list(PAIRS)
    loaded = load_base(str(tiny_llama))
    adapter = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "checkpoint")
    merged = load_base(str(tiny_llama))
    merged.model = adapter.merge_and_unload().eval()
    expected_trial, expected_base = score_pairs(spec, merged, test), score_pairs(spec, load_base(str(tiny_llama)), test)

    loads = []
    monkeypatch.setattr(backends, "load_base", lambda path, *how: loads.append(path) or load_base(path, *how))
    experiment = SimpleNamespace(spec=spec, local_copy=lambda path: path)
    best = Best("t1", "dpo", "eval_pref_accuracy", "max", 1.0, 8, {}, tmp_path / "checkpoint", {})
    bases = scoring._Bases(backends.CPU_RUNTIME, spec.model.max_length)
    base = scoring._score(experiment, test, None, str(tiny_llama), bases)
    trial = scoring._score(experiment, test, best, str(tiny_llama), bases)
    again = scoring._score(experiment, test, None, str(tiny_llama), bases)
    assert len(loads) == 1
    assert trial["chosen"] == pytest.approx(expected_trial[0], abs=1e-5) and trial["trial_id"] == "t1"
    assert base["chosen"] == pytest.approx(expected_base[0], abs=1e-5)
    assert again["chosen"] == base["chosen"] and again["rejected"] == base["rejected"]
    assert max(abs(a - b) for a, b in zip(trial["chosen"], base["chosen"])) > 1e-3
