"""The preference-tuning methods tuner searches over: their TRL classes, config fields and default metric."""

from __future__ import annotations

import dataclasses
import difflib
import functools

from tuner import compat

# What each method is ranked on unless search.metric says otherwise: DPO's implicit reward margin between chosen
# and rejected answers, ORPO's log odds ratio; both are logged by TRL under these names on the eval split.
DEFAULT_METRIC = {"dpo": "eval_rewards/margins", "orpo": "eval_log_odds_ratio"}
CONFIG_CLASSES = {"dpo": "DPOConfig", "orpo": "ORPOConfig"}
_CLASSES = {"dpo": compat.dpo_classes, "orpo": compat.orpo_classes}


def config_class(method: str):
    return _CLASSES[method]()[0]


def trainer_class(method: str):
    return _CLASSES[method]()[1]


@functools.cache
def config_fields(method: str) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(config_class(method)) if f.init)


def closest_fields(method: str, name: str) -> list[str]:
    return difflib.get_close_matches(name, sorted(config_fields(method)), n=3, cutoff=0.7)
