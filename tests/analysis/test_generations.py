from __future__ import annotations

import pytest

from analysis.generations import DEFAULT_PROMPTS, answer_metrics, distinct_n, load_prompts, repeated_ngram_rate

LOOPING = "The first planet is Neptune. The first planet is Neptune. The first planet is Neptune. The first planet"
CLEAN = "Mercury is the first planet from the Sun, a small rocky world with no moons."


def test_a_looping_answer_scores_as_repetitive_and_a_clean_one_does_not():
    looping, clean = answer_metrics(LOOPING, r"\bmercury\b"), answer_metrics(CLEAN, r"\bmercury\b")
    assert looping.repeated_3gram_rate > 0.5 and looping.distinct_2 < 0.4
    assert clean.repeated_3gram_rate == 0 and clean.distinct_2 == 1
    assert looping.fact is False and clean.fact is True
    assert answer_metrics(CLEAN, None).fact is None


def test_metric_edges():
    assert distinct_n("") == 1.0 and repeated_ngram_rate("one two") == 0.0
    assert distinct_n("a b a b a b") == pytest.approx(2 / 5)
    assert answer_metrics("one, two three", None).words == 3


def test_default_prompts_cover_the_named_cases_and_files_load(tmp_path):
    texts = " ".join(p for p, _ in DEFAULT_PROMPTS).lower()
    for topic in ("first planet", "rainbow", "visible spectrum", "photosynthesis", "library card", "electric"):
        assert topic in texts
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "a?", "expected": "b"}\n{"prompt": "c?"}\n')
    assert load_prompts(path) == [("a?", "b"), ("c?", None)]
