"""The preference-tuning methods tuner searches over: their TRL classes, config fields and default metric."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import TYPE_CHECKING, Any

from tuner import compat

if TYPE_CHECKING:
    from tuner.spec import Spec

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


# Tuner's defaults for TRL fields; a value in the spec's `train` section wins.
TRAIN_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,
    "eval_steps": 4,
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
    "save_only_model": True,
}
# Set for every trial, whatever the spec says (the spec rejects these keys with the reason).
TRAIN_FIXED: dict[str, Any] = {"eval_strategy": "steps", "save_strategy": "no", "report_to": "none"}


def training_args(spec: Spec, output_dir: str, on_gpu: bool, precompute_reference: bool = False,
                  with_secrets: bool = False):
    """The spec's TRL config object (DPOConfig or ORPOConfig): TRL's defaults, then tuner's, then the spec's.
    `with_secrets` (only the trial that trains): `<field>_env` references become the secrets they name; elsewhere
    they are left out, so that derived values never need a secret."""
    from tuner.spec.secrets import resolved

    fields = config_fields(spec.method)
    kwargs = {k: v for k, v in TRAIN_DEFAULTS.items() if k in fields}
    # TRL defaults bf16 to True; on a CPU that is slower and lossier than float32.
    kwargs["bf16"] = on_gpu
    kwargs["max_length"] = spec.model.max_length
    kwargs.update(resolved(spec.train, with_secrets))
    kwargs.update(TRAIN_FIXED, output_dir=output_dir)
    if precompute_reference:
        kwargs["precompute_ref_log_probs"] = True
    return config_class(spec.method)(**kwargs)
