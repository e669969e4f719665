from __future__ import annotations

import pytest

from tuner.spec import SpecError, load_spec, set_dotted, validate_spec, with_sampled


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as caught:
        validate_spec(raw)
    return caught.value.problems


def test_defaults_validate_and_pick_the_method_metric():
    assert validate_spec({}).metric == "eval_rewards/margins"
    assert validate_spec({"method": "orpo"}).metric == "eval_log_odds_ratio"
    assert validate_spec({"search": {"metric": "eval_loss"}}).metric == "eval_loss"


def test_every_problem_is_listed_at_once_with_its_path_and_value():
    problems = problems_of({
        "model": {"nme": "x"},
        "train": {"bta": 0.1, "output_dir": "/tmp/x"},
        "lora": {"r": 0},
        "search": {"space": {"train.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-6}}},
    })
    assert "model.nme: unknown key, got 'x'" in problems
    assert "train.bta: not a field of TRL's DPOConfig (did you mean beta?), got 0.1" in problems
    assert any(p.startswith("train.output_dir: set by tuner") for p in problems)
    assert "lora.r: Input should be greater than 0, got 0" in problems
    assert "search.space.train.learning_rate: low must be < high, got low=0.0001 high=1e-06" in problems
    assert len(problems) == 5


@pytest.mark.parametrize(("distribution", "message"), [
    ({"type": "loguniform", "low": 0, "high": 1}, "a log scale needs low > 0, got low=0"),
    ({"type": "choice", "values": []}, "choice needs a non-empty list `values`, got []"),
    ({"type": "int", "low": 1.5, "high": 4}, "int needs whole bounds, got low=1.5 high=4"),
    ({"type": "uniform", "low": 1}, "uniform needs `low` and `high`, got low=1.0 high=None"),
    ({"type": "normal", "low": 1, "high": 2}, "Input should be"),
])
def test_distribution_errors(distribution, message):
    problems = problems_of({"search": {"space": {"train.beta": distribution}}})
    assert any(p.startswith("search.space.train.beta") and message in p for p in problems), problems


def test_space_keys_must_name_searchable_fields():
    space = {key: {"type": "choice", "values": [1]} for key in
             ("train.nope", "lora.rank", "run.name", "resources.cpu", "train.output_dir", "bogus")}
    problems = problems_of({"search": {"space": space}})
    assert len(problems) == 6
    valid = {key: {"type": "choice", "values": [1]} for key in
             ("train.beta", "lora.r", "lora.alpha", "model.max_length", "data.max_rows")}
    validate_spec({"search": {"space": valid}})


def test_grid_needs_a_grid_capable_algorithm():
    space = {"train.beta": {"type": "grid", "values": [0.1, 0.2]}}
    assert any("grid values need" in p for p in problems_of({"search": {"space": space}}))
    validate_spec({"search": {"algorithm": "grid", "space": space}})
    mixed = {**space, "train.learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-4}}
    assert any("algorithm 'grid' takes only" in p for p in problems_of({"search": {"algorithm": "grid",
                                                                                     "space": mixed}}))


def test_searched_method_needs_a_metric_and_fields_valid_for_both():
    space = {"method": {"type": "choice", "values": ["dpo", "orpo"]}}
    assert any(p.startswith("search.metric: required") for p in problems_of({"search": {"space": space}}))
    spec = validate_spec({"search": {"metric": "eval_loss", "mode": "min", "space": space}, "train": {"beta": 0.2}})
    assert spec.searched_methods() == ["dpo", "orpo"]
    # rpo_alpha is a DPOConfig field that ORPOConfig does not have
    problems = problems_of({"search": {"metric": "eval_loss", "space": space}, "train": {"loss_type": ["sigmoid"]}})
    assert any("ORPOConfig" in p for p in problems)


def test_orpo_fields_are_checked_against_orpo_config():
    validate_spec({"method": "orpo", "train": {"beta": 0.5, "max_completion_length": 64}})
    assert problems_of({"method": "orpo", "train": {"precompute_ref_log_probs": True}})


def test_points_to_evaluate_must_use_searched_keys():
    raw = {"search": {"space": {"train.beta": {"type": "uniform", "low": 0.1, "high": 0.5}},
                      "points_to_evaluate": [{"train.beta": 0.2, "lora.r": 4}]}}
    assert problems_of(raw) == ["search.points_to_evaluate.0: keys must be searched keys ['train.beta'], got ['lora.r']"]
    space = {"train.beta": {"type": "uniform", "low": 0.1, "high": 0.5}, "lora.r": {"type": "choice", "values": [4]}}
    partial = {"search": {"space": space, "points_to_evaluate": [{"train.beta": 0.2}]}}
    assert problems_of(partial)[0].startswith("search.points_to_evaluate.0: Optuna needs a value for every searched "
                                              "key, missing ['lora.r']")
    validate_spec({"search": {**partial["search"], "algorithm": "random"}})


def test_yaml_off_means_no_wandb_and_fractional_gpus():
    assert validate_spec({"run": {"wandb": False}}).run.wandb == "off"
    assert validate_spec({"resources": {"gpu": 0.25}}).resources.gpu == 0.25
    assert problems_of({"resources": {"gpu": 1.5}}) == [
        "resources.gpu: above 1 must be a whole number of GPUs, got 1.5"]


def test_overrides_apply_dotted_keys(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("search:\n  space:\n    train.beta: {type: loguniform, low: 0.01, high: 0.5}\n")
    spec = load_spec(path, ["search.num_samples=2", "train.max_steps=4", "search.space.train.beta.high=0.9",
                            "search.space.lora.r={type: choice, values: [4, 8]}"])
    assert spec.search.num_samples == 2 and spec.train == {"max_steps": 4}
    assert spec.search.space["train.beta"].high == 0.9
    assert spec.search.space["lora.r"].values == [4, 8]


def test_bad_overrides_and_files_are_reported(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(None, ["novalue", "search.num_samples=0"])
    assert caught.value.problems[0].startswith("override 'novalue': expected key=value")
    assert any(p.startswith("search.num_samples:") for p in caught.value.problems)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(tmp_path / "list.yaml")


def test_with_sampled_applies_and_revalidates():
    spec = validate_spec({"train": {"beta": 0.1}})
    sampled = with_sampled(spec, {"train.beta": 0.3, "lora.r": 16, "method": "orpo"})
    assert sampled.train["beta"] == 0.3 and sampled.lora.r == 16 and sampled.method == "orpo"
    with pytest.raises(SpecError):
        with_sampled(spec, {"lora.r": -1})


def test_set_dotted_under_space_finds_existing_keys_with_dots():
    raw = {"search": {"space": {"train.learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-3}}}}
    set_dotted(raw, "search.space.train.learning_rate.low", 1e-6)
    assert raw["search"]["space"]["train.learning_rate"]["low"] == 1e-6
