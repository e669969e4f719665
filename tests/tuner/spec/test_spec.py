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
    valid = {key: {"type": "choice", "values": [64]} for key in
             ("train.beta", "lora.r", "lora.alpha", "model.max_length", "model.backend")}
    valid["model.backend"] = {"type": "choice", "values": ["hf"]}
    validate_spec({"search": {"space": valid}})


@pytest.mark.parametrize(("key", "reason"), [
    ("data.max_rows", "the data is loaded, split and prepared once per search"),
    ("data.seed", "the data is loaded, split and prepared once per search"),
])
def test_keys_the_driver_uses_once_cannot_be_searched(key, reason):
    values = [1, 2]
    problems = problems_of({"search": {"space": {key: {"type": "choice", "values": values}}}})
    assert problems == [f"search.space.{key}: cannot be searched: {reason}" + problems[0].split(reason)[1]]
    assert problems[0].endswith(f"got {key!r}")


def test_yaml_text_numbers_are_coerced_to_the_trl_field_type():
    # YAML 1.1 reads 1e-2 and 1e3 (no dot) as text; TRL would get a str and fail in every trial
    spec = load_spec(None, ["train.weight_decay=1e-2", "train.max_steps=1e3", "train.warmup_steps=2",
                            "search.space.train.learning_rate={type: choice, values: [1e-5, 1e-4]}",
                            "search.space.train.beta={type: uniform, low: 1e-2, high: 1e-1}",
                            "search.points_to_evaluate=[{train.learning_rate: 1e-5, train.beta: 5e-2}]"])
    assert spec.train == {"weight_decay": 0.01, "max_steps": 1000, "warmup_steps": 2}
    assert type(spec.train["max_steps"]) is int and type(spec.train["weight_decay"]) is float
    assert spec.search.space["train.learning_rate"].values == [1e-5, 1e-4]
    assert spec.search.points_to_evaluate == [{"train.learning_rate": 1e-5, "train.beta": 0.05}]
    assert spec.trl_args().max_steps == 1000
    # TRL wraps a single loss_type itself: a scalar where a list is declared stays as it is
    assert validate_spec({"train": {"loss_type": "sigmoid"}}).train == {"loss_type": "sigmoid"}


@pytest.mark.parametrize(("train", "problem"), [
    ({"max_steps": "abc"}, "train.max_steps: TRL's DPOConfig.max_steps takes int, got 'abc'"),
    ({"max_steps": 2.5}, "train.max_steps: TRL's DPOConfig.max_steps takes int, got 2.5"),
    ({"learning_rate": "fast"}, "train.learning_rate: TRL's DPOConfig.learning_rate takes float, got 'fast'"),
    ({"use_cpu": "maybe"}, "train.use_cpu: TRL's DPOConfig.use_cpu takes bool, got 'maybe'"),
    ({"lr_scheduler_type": 5}, "train.lr_scheduler_type: TRL's DPOConfig.lr_scheduler_type takes SchedulerType | str, "
                               "got 5"),
    ({"eval_steps": 0}, "train.eval_steps: must be greater than 0, got 0"),
    ({"per_device_train_batch_size": 0}, "train.per_device_train_batch_size: must be greater than 0, got 0"),
    ({"gradient_accumulation_steps": -1}, "train.gradient_accumulation_steps: must be greater than 0, got -1"),
])
def test_train_values_must_fit_the_trl_field_type(train, problem):
    assert problems_of({"train": train}) == [problem]


def test_what_trl_config_refuses_is_a_spec_problem_naming_the_key():
    problems = problems_of({"train": {"lr_scheduler_type": "nope", "beta": 0.2}})
    assert len(problems) == 1
    assert problems[0].startswith("train.lr_scheduler_type: TRL's DPOConfig refuses it: nope is not a valid "
                                  "SchedulerType")
    assert problems[0].endswith("got 'nope'")
    both = problems_of({"train": {"logging_steps": 0, "eval_steps": "x"}})
    assert "train.eval_steps: TRL's DPOConfig.eval_steps takes float | None, got 'x'" in both


@pytest.mark.parametrize(("key", "distribution", "problem"), [
    ("lora.r", {"type": "uniform", "low": 4, "high": 16},
     "search.space.lora.r: type 'uniform' samples fractional numbers, but lora.r takes int (use type int or choice)"),
    ("train.max_steps", {"type": "loguniform", "low": 4, "high": 64},
     "search.space.train.max_steps: type 'loguniform' samples fractional numbers, but TRL's DPOConfig.max_steps "
     "takes int"),
    ("method", {"type": "int", "low": 0, "high": 1},
     "search.space.method: type 'int' samples whole numbers, but method takes Literal['dpo', 'orpo', 'ipo', 'simpo']"),
    ("lora.r", {"type": "int", "low": 0, "high": 8},
     "search.space.lora.r: low 0 does not fit: input should be greater than 0 (lora.r)"),
    ("lora.r", {"type": "choice", "values": [4, "big"]},
     "search.space.lora.r: value 'big' does not fit: lora.r takes int"),
    ("train.per_device_train_batch_size", {"type": "choice", "values": [0, 2]},
     "search.space.train.per_device_train_batch_size: must be greater than 0, got 0"),
])
def test_searched_values_must_fit_the_field_they_set(key, distribution, problem):
    problems = problems_of({"search": {"space": {key: distribution}}})
    assert len(problems) == 1 and problems[0].startswith(problem), problems


@pytest.mark.parametrize(("raw", "problem"), [
    ({"search": {"metric": "eval_pref_acc"}}, "search.metric: DPO trials never report it (did you mean "
                                              "eval_pref_accuracy"),
    ({"search": {"metric": "eval_log_odds_ratio"}}, "search.metric: DPO trials never report it; they report"),
    ({"method": "orpo", "search": {"metric": "eval_entropy"}}, "search.metric: ORPO trials never report it"),
    ({"search": {"metric": "eval_log_odds_ratio", "space": {"method": {"type": "choice", "values": ["dpo", "orpo"]}}}},
     "search.metric: DPO trials never report it"),
])
def test_the_search_metric_must_be_one_every_searched_method_reports(raw, problem):
    problems = problems_of(raw)
    assert len(problems) == 1 and problems[0].startswith(problem), problems
    assert "eval_pref_accuracy" in problems[0] and problems[0].endswith(f"got {raw['search']['metric']!r}")
    for metric in ("eval_pref_accuracy", "eval_drift", "eval_loss", "eval_rewards/margins"):
        validate_spec({"search": {"metric": metric, "space": {"method": {"type": "choice",
                                                                           "values": ["dpo", "orpo"]}}}})


def test_every_default_metric_is_reported_by_its_method():
    from tuner.trial import methods
    from tuner.evidence.quality import METRIC

    for method, metric in methods.DEFAULT_METRIC.items():
        assert metric in methods.EVAL_METRICS[method]
        assert METRIC in methods.EVAL_METRICS[method]


def test_null_sections_take_overrides(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("train:\nsearch:\n")
    spec = load_spec(path, ["train.beta=0.2", "search.space.lora.r={type: choice, values: [4]}"])
    assert spec.train == {"beta": 0.2} and spec.search.space["lora.r"].values == [4]


def test_alias_bombs_and_unreadable_files_are_spec_errors(tmp_path):
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        bomb.append(f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 10)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(bomb) + "\ntrain: {beta: *h}\n")
    with pytest.raises(SpecError, match=r"the spec expands to more than 100000 values \(YAML aliases"):
        load_spec(path)
    loop = tmp_path / "loop.yaml"
    loop.write_text("train: &t {beta: *t}\n")
    with pytest.raises(SpecError, match="expands to more than"):
        load_spec(loop)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("run: {name: caf\u00e9}\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"not UTF-8 text \(byte 0xe9 at offset 15\)"):
        load_spec(latin1)


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


@pytest.mark.parametrize(("raw", "problem"), [
    ({"data": {"eval_groups": ["style"]}, "search": {"guard_groups": ["fact"]}},
     "search.guard_groups: ['fact'] not in data.eval_groups ['style']"),
    ({"data": {"eval_groups": ["fact"]}, "search": {"guard_groups": ["fact"]}},
     "search.guard_groups: every eval group is a guard"),
])
def test_guard_groups_must_be_eval_groups_and_leave_one_to_search_on(raw, problem):
    problems = problems_of(raw)
    assert len(problems) == 1 and problems[0].startswith(problem), problems
    validate_spec({"data": {"eval_groups": ["fact", "style"]}, "search": {"guard_groups": ["fact"]}})
    # data whose groups are not the spec's (another source): the driver says the guard applies to nothing
    validate_spec({"data": {"source": "pairs.jsonl"}, "search": {"guard_groups": ["fact"]}})


BOTH = {"method": {"type": "choice", "values": ["dpo", "orpo"]}}


def test_a_key_scoped_to_a_method_sets_that_methods_trials_only():
    space = {**BOTH, "dpo.train.beta": {"type": "loguniform", "low": 0.05, "high": 0.5},
             "orpo.train.beta": {"type": "loguniform", "low": 3.0, "high": 16.0},
             "orpo.lora.r": {"type": "choice", "values": [4, 16]}}
    spec = validate_spec({"search": {"metric": "eval_pref_accuracy", "space": space}, "lora": {"r": 8}})
    sampled = {"method": "dpo", "dpo.train.beta": 0.2, "orpo.train.beta": 6.0, "orpo.lora.r": 16}
    dpo = with_sampled(spec, sampled)
    assert (dpo.method, dpo.train["beta"], dpo.lora.r) == ("dpo", 0.2, 8)
    orpo = with_sampled(spec, {**sampled, "method": "orpo"})
    assert (orpo.method, orpo.train["beta"], orpo.lora.r) == ("orpo", 6.0, 16)
    # without a searched method, the spec's method decides
    single = validate_spec({"method": "orpo", "search": {"space": {"orpo.train.beta": space["orpo.train.beta"]}}})
    assert with_sampled(single, {"orpo.train.beta": 5.0}).train["beta"] == 5.0


@pytest.mark.parametrize("raw_space, problem", [
    ({"orpo.train.bta": {"type": "uniform", "low": 1, "high": 2}},
     "search.space.orpo.train.bta: not a field of TRL's ORPOConfig (did you mean beta?), got 'train.bta'"),
    ({"orpo.train.precompute_ref_log_probs": {"type": "choice", "values": [True]}},
     "search.space.orpo.train.precompute_ref_log_probs: not a field of TRL's ORPOConfig"),
    ({"orpo.train.beta": {"type": "loguniform", "low": -1, "high": 2}},
     "search.space.orpo.train.beta: a log scale needs low > 0, got low=-1"),
    ({"dpo.method": {"type": "choice", "values": ["dpo"]}},
     "search.space.dpo.method: a method cannot be scoped to a method, got 'dpo.method'"),
    ({"train.beta": {"type": "uniform", "low": 0.1, "high": 1}, "orpo.train.beta": {"type": "uniform", "low": 1, "high": 2}},
     "search.space.orpo.train.beta: train.beta is searched for every method already"),
])
def test_scoped_keys_are_checked_as_the_field_they_set_for_their_method(raw_space, problem):
    problems = problems_of({"search": {"metric": "eval_pref_accuracy", "space": {**BOTH, **raw_space}}})
    assert any(p.startswith(problem) for p in problems), problems


def test_a_key_scoped_to_a_method_no_trial_runs_is_refused():
    raw = {"method": "dpo", "search": {"space": {"orpo.train.beta": {"type": "uniform", "low": 1, "high": 2}}}}
    assert problems_of(raw) == ["search.space.orpo.train.beta: scoped to orpo, which no trial of this search runs "
                                "(methods: ['dpo']), got 'orpo.train.beta'"]
