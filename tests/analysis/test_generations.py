from __future__ import annotations

import pytest

from analysis import generations
from analysis.generations import (DEFAULT_PROMPTS, Prompt, answer_metrics, check_fact, distinct_n, load_prompts,
                                  normalise, regressions, repeated_ngram_rate, write_tables)
from tests.tuner.test_export import lora_adapter, quantized_copy
from tuner.errors import UserError

LOOPING = "The first planet is Neptune. The first planet is Neptune. The first planet is Neptune. The first planet"
CLEAN = "Mercury is the first planet from the Sun, a small rocky world with no moons."
PLANET = DEFAULT_PROMPTS[0]
BOILING = next(p for p in DEFAULT_PROMPTS if "boil" in p.text)
CAPITAL = next(p for p in DEFAULT_PROMPTS if "Australia" in p.text)


def test_a_looping_answer_scores_as_repetitive_and_a_clean_one_does_not():
    looping, clean = answer_metrics(LOOPING, PLANET), answer_metrics(CLEAN, PLANET)
    assert looping.repeated_3gram_rate > 0.5 and looping.distinct_2 < 0.4
    assert clean.repeated_3gram_rate == 0 and clean.distinct_2 == 1
    assert (looping.fact, looping.wrong) == (False, "neptune") and (clean.fact, clean.found) == (True, "mercury")
    assert answer_metrics(CLEAN).fact is None and answer_metrics(CLEAN, DEFAULT_PROMPTS[4]).fact is None


def test_metric_edges():
    assert distinct_n("") == 1.0 and repeated_ngram_rate("one two") == 0.0
    assert distinct_n("a b a b a b") == pytest.approx(2 / 5)
    assert answer_metrics("one, two three").words == 3


@pytest.mark.parametrize(("answer", "passed"), [
    ("Water boils at 100 °C at sea level.", True),
    ("Water boils at 100°C.", True),
    ("It boils at 100 degrees Celsius.", True),
    ("The boiling point is 100ºC (212°F).", True),
    ("At sea level water boils at 212 degrees Fahrenheit.", True),
    ("It boils at 100 degrees.", True),
    ("Water at sea level is approximately 100°F (38.7°C).", False),  # the answer: 100, but Fahrenheit
    ("Water boils at 100 F.", False),
    ("Water boils at 1000 °C.", False),  # 100 is not in 1000
    ("Water boils at 100.5 °C.", False),
    ("Water boils at 1,100 °C.", False),
    ("It boils at 100.", False),  # a bare number is no temperature
    ("Water boils when it is hot.", False),
])
def test_fact_check_reads_units_and_whole_numbers(answer, passed):
    assert check_fact(answer, BOILING)[0] is passed


@pytest.mark.parametrize(("answer", "passed", "wrong"), [
    ("The capital of Australia is Canberra.", True, None),
    ("Canberra's parliament house is famous.", True, None),
    ("The capital of Australia is Sydney.", False, "sydney"),
    ("Sydney is the biggest city, but the capital is Canberra.", False, "sydney"),  # a wrong answer named fails
    ("Canberrans live in the capital.", False, None),  # whole words only
])
def test_fact_check_uses_word_boundaries_and_wrong_answers(answer, passed, wrong):
    found = check_fact(answer, CAPITAL)
    assert found[0] is passed and found[2] == wrong


def test_word_boundaries_for_planets():
    mars = next(p for p in DEFAULT_PROMPTS if "Red Planet" in p.text)
    assert check_fact("The marsupial planet.", mars)[0] is False
    assert check_fact("Mars.", mars)[0] is True


def test_normalise_writes_temperatures_and_thousands_one_way():
    assert normalise("100°F") == normalise("100 degrees Fahrenheit") == normalise("100 F") == "100 °f"
    assert normalise("1,000 grams") == "1000 grams"
    assert normalise("373 Kelvin") == "373 k"


def test_regressions_mark_answers_whose_fact_the_base_model_had():
    prompts = [CAPITAL, BOILING, DEFAULT_PROMPTS[4]]
    columns = {"base": ["Canberra.", "100 °F", "Free books."],
               "best DPO (t1)": ["Sydney.", "100 °C", "Nothing."]}
    assert regressions(columns, prompts) == {"best DPO (t1)": [0]}


def test_tables_mark_regressed_answers(tmp_path):
    prompts = [CAPITAL, BOILING]
    columns = {"base": ["The capital of Australia is Canberra.", "Water boils at 100 °C."],
               "best DPO (t1)": ["The capital of Australia is Sydney.", "Water boils at 100°F (38.7°C)."]}
    markdown = write_tables(columns, prompts, tmp_path)["markdown"].read_text()
    assert markdown.count("REGRESSED") == 2
    assert "fact ✗ (wrong: sydney)" in markdown and "fact ✗ (wrong: 100 °F)" in markdown
    assert "best DPO (t1): fact check passed on 0/2, regressed on 2" in markdown


def test_default_prompts_cover_the_named_cases_and_files_load(tmp_path):
    texts = " ".join(p.text for p in DEFAULT_PROMPTS).lower()
    for topic in ("first planet", "rainbow", "visible spectrum", "photosynthesis", "library card", "electric"):
        assert topic in texts
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "a?", "accepted": ["b"], "wrong": ["c"]}\n{"prompt": "c?"}\n'
                    '{"prompt": "d?", "expected": "e+"}\n')
    assert load_prompts(path) == [Prompt("a?", ("b",), ("c",)), Prompt("c?"), Prompt("d?", pattern="e+")]
    assert check_fact("eee", load_prompts(path)[2])[0] is True
    path.write_text('{"question": "a?"}\n')
    with pytest.raises(UserError, match="line 1: expected JSON with a `prompt`"):
        load_prompts(path)


# ---------------------------------------------------------------------------------------------- where they run


@pytest.mark.parametrize(("cuda", "bf16", "device", "dtype"), [
    (False, False, "cpu", "float32"),
    (True, True, "cuda", "bfloat16"),
    (True, False, "cuda", "float32"),  # a GPU without bfloat16
])
def test_generation_runs_on_the_gpu_in_bfloat16_where_there_is_one(monkeypatch, cuda, bf16, device, dtype):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert generations.generation_device() == (torch.device(device), getattr(torch, dtype))


class LoadedModel:
    """What AutoModelForCausalLM.from_pretrained returned: how it was loaded, and where it was moved."""

    def __init__(self, name: str, **options):
        self.name, self.options, self.moved_to = name, options, None

    def to(self, device):
        self.moved_to = device
        return self


@pytest.mark.parametrize(("cuda", "quantized", "options", "moved_to"), [
    (False, False, {"dtype": "torch.float32"}, None),  # on a CPU: float32, as trials train there; never moved
    (True, False, {"dtype": "torch.bfloat16"}, "cuda"),
    (True, True, {"dtype": "torch.bfloat16", "device_map": {"": 0}}, None),  # bitsandbytes places it; 4 bits refuse .to
])
def test_the_base_loads_on_the_generation_device(monkeypatch, cuda, quantized, options, moved_to):
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", LoadedModel)
    model = generations.load_base("some/model", quantized)
    assert model.name == "some/model"
    assert {**model.options, "dtype": str(model.options["dtype"])} == options
    assert model.moved_to == (torch.device(moved_to) if moved_to else None)


def test_compare_loads_the_full_precision_base_and_generates_on_the_cpu(tmp_path, tiny_llama, monkeypatch):
    """An adapter whose config names a quantized folder: refused on a CPU without --base, answered with it."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    quantized = quantized_copy(tiny_llama, tmp_path / "tiny-bnb-4bit")
    lora_adapter(tiny_llama, tmp_path / "adapter", str(quantized))
    adapters, prompts = {"best DPO (t1)": tmp_path / "adapter"}, [CAPITAL, BOILING]
    with pytest.raises(UserError, match=r"--base: the adapters' base .*tiny-bnb-4bit is a quantized folder, which "
                                        r"loads only on a CUDA machine"):
        generations.compare(adapters, prompts, max_new_tokens=3)
    columns = generations.compare(adapters, prompts, max_new_tokens=3, base=str(tiny_llama))
    assert list(columns) == ["base", "best DPO (t1)"]
    assert all(len(answers) == 2 and all(isinstance(a, str) for a in answers) for answers in columns.values())
    # greedy on the CPU: the same answers again
    assert generations.compare(adapters, prompts, max_new_tokens=3, base=str(tiny_llama)) == columns
