"""The method registry (tuner.trial.methods): each method's TRL classes and the fields it sets reach the built
config, loss types are TRL's own, and the docs list every registered method."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tuner.spec import SpecError, validate_spec
from tuner.trial import methods


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_builds_its_trl_config_with_the_fields_it_sets(name):
    method = methods.get(name)
    spec = validate_spec({"method": name, "train": {"beta": 0.3}})
    args = spec.trl_args()
    assert type(args).__name__ == method.config_class_name and args.beta == 0.3
    for field, value in method.fixed.items():
        assert getattr(args, field) == value
    assert spec.metric == method.default_metric in method.eval_metrics
    assert methods.scoped(f"{name}.train.beta") == (name, "train.beta")


def test_ipo_is_dpos_trainer_and_reference_with_the_ipo_loss():
    ipo = methods.get("ipo")
    assert ipo.uses_reference and ipo.family == "dpo" and ipo.fixed == {"loss_type": ["ipo"]}
    assert methods.trainer_class("ipo") is methods.trainer_class("dpo")
    assert not methods.get("orpo").uses_reference


def test_loss_types_are_read_from_trls_config():
    known = methods.loss_types("dpo")
    assert {"sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "discopop"} <= known
    assert methods.loss_types("orpo") is None  # ORPOConfig has no loss_type


@pytest.mark.parametrize(("raw", "problem"), [
    ({"train": {"loss_type": "bogus"}}, "train.loss_type: DPOConfig knows no loss type ['bogus']"),
    ({"train": {"loss_type": ["sigmoid", "bogus"], "loss_weights": [0.5, 0.5]}},
     "train.loss_type: DPOConfig knows no loss type ['bogus']"),
    ({"search": {"space": {"train.loss_type": {"type": "choice", "values": ["hinge", "nope"]}}}},
     "search.space.train.loss_type: DPOConfig knows no loss type ['nope']"),
    ({"method": "ipo", "train": {"loss_type": "hinge"}}, "train.loss_type: ipo sets loss_type itself (['ipo'])"),
    ({"method": "ipo", "search": {"space": {"train.loss_type": {"type": "choice", "values": ["hinge"]}}}},
     "search.space.train.loss_type: ipo sets loss_type itself"),
    ({"method": "kto"}, "method: Input should be 'dpo', 'orpo', 'ipo' or 'simpo'"),
    ({"method": "simpo", "train": {"precompute_ref_log_probs": True}},
     "train.precompute_ref_log_probs: not a field of TRL's CPOConfig"),
    ({"method": "simpo", "train": {"loss_type": "sigmoid"}}, "train.loss_type: simpo sets loss_type itself"),
])
def test_a_loss_the_method_cannot_run_is_one_line(raw, problem):
    with pytest.raises(SpecError) as raised:
        validate_spec(raw)
    assert len(raised.value.problems) == 1 and raised.value.problems[0].startswith(problem), raised.value.problems


def test_a_searched_loss_type_of_dpo_is_valid():
    spec = validate_spec({"search": {"space": {"train.loss_type": {"type": "choice", "values": ["sigmoid", "ipo"]}}}})
    assert spec.search.space["train.loss_type"].values == ["sigmoid", "ipo"]


def test_the_docs_list_every_registered_method():
    methods_section = (REPO / "docs" / "spec.md").read_text().split("## Methods", 1)[1].split("\n## ", 1)[0]
    for name, method in methods.METHODS.items():
        assert f"| `{name}` | " in methods_section, name
        assert method.config_class_name in methods_section
