"""The preference-tuning methods tuner searches over, one registration each (`register(Method(...))`): their TRL
classes, the TRL fields a method sets, config fields and default metric."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from tuner.trial import compat

if TYPE_CHECKING:
    from tuner.spec import Spec

# What a trial of each method reports to Tune at every evaluation: the only names a search can rank on (Ray stops
# the whole search at the first report that lacks the search metric). TRL's eval metrics as TRL 1.15/1.16 log them,
# plus tuner's own, reported for every method: held-out preference accuracy (tuner.evidence.quality.METRIC) and the
# drift from the base model.
TUNER_EVAL_METRICS = ("eval_pref_accuracy", "eval_pref_margin", "eval_drift")
_TRL_EVAL_METRICS = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second",
                     "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/accuracies", "eval_rewards/margins",
                     "eval_logps/chosen", "eval_logps/rejected", "eval_logits/chosen", "eval_logits/rejected")
_DPO_EVAL_METRICS = frozenset(_TRL_EVAL_METRICS + ("eval_entropy", "eval_mean_token_accuracy", "eval_num_tokens")
                              + TUNER_EVAL_METRICS)


@dataclass(frozen=True)
class Method:
    """One preference-tuning method as tuner runs it: TRL's config and trainer, the TRL fields the method itself
    sets, what it is ranked on by default, what its trials report, and its trainer family (tuner.trial.trainers:
    `dpo`, DPOTrainer against a frozen reference, whose log-probs a search shares; `orpo` and `cpo`, reference-free)."""

    name: str
    classes: Callable[[], tuple[type, type]]  # (TRL config class, TRL trainer class), imported when asked
    config_class_name: str
    default_metric: str
    eval_metrics: frozenset[str]
    family: str
    fixed: dict[str, Any] = field(default_factory=dict)  # TRL fields the method sets; the spec cannot set them
    defaults: dict[str, Any] = field(default_factory=dict)  # the method's defaults for TRL fields; the spec's win
    beta: str = ""  # what train.beta means for this method (docs/spec.md)

    @property
    def uses_reference(self) -> bool:
        return self.family == "dpo"


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


register(Method(
    "dpo", compat.dpo_classes, "DPOConfig", family="dpo", eval_metrics=_DPO_EVAL_METRICS,
    # DPO's implicit reward margin between chosen and rejected answers, as TRL logs it on the eval split
    default_metric="eval_rewards/margins",
    beta="the KL strength towards the reference (0.1 to 0.3 moves the bundled data)"))
register(Method(
    "orpo", compat.orpo_classes, "ORPOConfig", family="orpo", default_metric="eval_log_odds_ratio",
    eval_metrics=frozenset(_TRL_EVAL_METRICS + ("eval_nll_loss", "eval_log_odds_ratio", "eval_log_odds_chosen")
                           + TUNER_EVAL_METRICS),
    beta="the weight of the odds-ratio term against the SFT loss (from about 4 up on the bundled data)"))
register(Method(
    "ipo", compat.dpo_classes, "DPOConfig", family="dpo", eval_metrics=_DPO_EVAL_METRICS,
    default_metric="eval_rewards/margins", fixed={"loss_type": ["ipo"]},
    beta="IPO's tau: the squared loss pulls each pair's per-token log-ratio margin towards 1/(2 tau), so a "
         "smaller tau pushes harder (its own scale, not DPO's)"))

register(Method(
    "simpo", compat.cpo_classes, "CPOConfig", family="cpo", default_metric="eval_rewards/margins",
    eval_metrics=frozenset(_TRL_EVAL_METRICS + ("eval_nll_loss",) + TUNER_EVAL_METRICS),
    fixed={"loss_type": "simpo"},
    # SimPO alone: CPO's NLL term off (TRL: "set cpo_alpha to 0 for SimPO"); train.cpo_alpha > 0 is CPO-SimPO
    defaults={"cpo_alpha": 0.0},
    beta="SimPO's reward scale on the length-normalised log-probs, with train.simpo_gamma the target margin "
         "(no reference model)"))

# Views of the registry, by method name.
DEFAULT_METRIC = {name: m.default_metric for name, m in METHODS.items()}
CONFIG_CLASSES = {name: m.config_class_name for name, m in METHODS.items()}
EVAL_METRICS: dict[str, frozenset[str]] = {name: m.eval_metrics for name, m in METHODS.items()}


def get(method: str) -> Method:
    return METHODS[method]


def scoped(key: str) -> tuple[str | None, str]:
    """(method, key) of a searched key. `orpo.train.beta` is `train.beta` for ORPO trials only, so that a search over
    both methods samples each on its own scale (DPO's beta is a KL strength near 0.1, ORPO's an odds-ratio weight
    that moves this data from about 4); an unscoped key is for every method: (None, key)."""
    scope, _, rest = key.partition(".")
    return (scope, rest) if scope in CONFIG_CLASSES and rest else (None, key)


def for_method(sampled: dict[str, Any], method: str) -> dict[str, Any]:
    """The sampled `dotted.key: value` pairs a trial of `method` applies, unscoped; keys scoped to another method
    are left out."""
    applied = {}
    for key, value in sampled.items():
        scope, unscoped = scoped(key)
        if scope in (None, method):
            applied[unscoped] = value
    return applied


def config_class(method: str):
    return METHODS[method].classes()[0]


def trainer_class(method: str):
    return METHODS[method].classes()[1]


@functools.cache
def config_fields(method: str) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(config_class(method)) if f.init)


@functools.cache
def field_types(method: str) -> dict[str, Any]:
    """Each init field of the method's TRL config with its declared type (e.g. `int`, `float | None`)."""
    hints = typing.get_type_hints(config_class(method))
    return {name: hints[name] for name in config_fields(method)}


@functools.cache
def loss_types(method: str) -> frozenset[str] | None:
    """The loss types the method's TRL config documents for `loss_type` (its `choices`, else the names its help
    quotes), or None when it has no such field or names none: what a trial's loss can be, checked before any trial."""
    found = {f.name: f for f in dataclasses.fields(config_class(method))}.get("loss_type")
    if found is None:
        return None
    choices = found.metadata.get("choices") or re.findall(r"`'(\w+)'`", found.metadata.get("help", ""))
    return frozenset(choices) or None


def closest_fields(method: str, name: str) -> list[str]:
    return difflib.get_close_matches(name, sorted(config_fields(method)), n=3, cutoff=0.7)


# Tuner's defaults for TRL fields; a value in the spec's `train` section wins.
TRAIN_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,
    "eval_steps": 4,
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
    "save_only_model": True,
    # transformers otherwise logs the mean of earlier losses in place of a NaN or infinite one, so that a diverged
    # trial would log finite losses forever; tuner.trial.reporting ends such a trial as ERROR instead.
    "logging_nan_inf_filter": False,
}
# Set for every trial, whatever the spec says (the spec rejects these keys with the reason).
TRAIN_FIXED: dict[str, Any] = {"eval_strategy": "steps", "save_strategy": "no", "report_to": "none"}


def training_args(spec: Spec, output_dir: str, on_gpu: bool, precompute_reference: bool = False,
                  with_secrets: bool = False, device_free: bool = False):
    """The spec's TRL config object (DPOConfig or ORPOConfig): TRL's defaults, then tuner's, then the spec's.
    `with_secrets` (only the trial that trains): `<field>_env` references become the secrets they name; elsewhere
    they are left out, so that derived values never need a secret. `device_free`: built only to read values and
    check the spec, so it must not touch (or need) a GPU."""
    fields = config_fields(spec.method)
    kwargs = {k: v for k, v in TRAIN_DEFAULTS.items() if k in fields}
    # TRL defaults bf16 to True; on a CPU that is slower and lossier than float32.
    kwargs["bf16"] = on_gpu
    # TRL defaults gradient checkpointing to True: it saves memory by recomputing activations in the backward pass,
    # a third more compute that a CPU run, where memory is not short, only waits for.
    kwargs["gradient_checkpointing"] = on_gpu
    kwargs["max_length"] = spec.model.max_length
    kwargs.update(METHODS[spec.method].defaults)
    kwargs.update(spec.train_values(with_secrets))
    kwargs.update(TRAIN_FIXED, output_dir=output_dir)
    kwargs.update(METHODS[spec.method].fixed)
    if precompute_reference:
        kwargs["precompute_ref_log_probs"] = True
    if device_free:
        kwargs["use_cpu"] = True
    return config_class(spec.method)(**kwargs)
