"""Checks that span sections of a spec. They run on the raw dict, so that they add to pydantic's errors instead of
waiting for them; defaults are read from the schema (or TRL's config classes), never restated.

`typed_values` coerces and checks every value that reaches a typed field (TRL's config fields, the spec's sections)
against that field's declared type; `cross_check` the rules that span sections; `trl_problems` what TRL's own config
classes refuse once the spec is built.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from tuner.trial import methods
from tuner.spec.secrets import check_train_secret, how_to_give, is_secret, referenced_secret
from tuner.spec.schema import RESERVED_TRAIN_FIELDS, UNSEARCHABLE_SECTIONS, Spec
from tuner.spec.search_checks import search_problems

# Searched sections whose values the driver uses once for the whole search: a trial's sampled value would be ignored
# (data.*: the pairs are loaded, split and saved once; model.name: the base model is scored and the reference
# computed once), so searching them is refused with the reason.
PREPARED_ONCE = {
    "data": "the data is loaded, split and prepared once per search, before any trial; run one search per data "
            "setting",
}  # model.name can be searched: each model is scored as its own base, and the reference is then per trial
# TRL fields that TRL's own config classes let through at 0 or below, but that fail or loop once a trial trains:
# a batch of 0 pairs, no gradient accumulation, an evaluation "every 0 steps" (TRL silently turns 0 into
# logging_steps).
POSITIVE_TRAIN_FIELDS = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                         "eval_steps")


def possible_methods(raw: dict[str, Any]) -> list[str]:
    """The methods trials of this raw spec may run: the searched values of `method`, else `method`."""
    space = _space(raw)
    searched = space.get("method")
    if isinstance(searched, dict) and isinstance(searched.get("values"), list):
        return [m for m in searched["values"] if isinstance(m, str) and m in methods.CONFIG_CLASSES]
    method = raw.get("method", Spec.model_fields["method"].default)
    return [method] if isinstance(method, str) and method in methods.CONFIG_CLASSES else []


def _search(raw: dict[str, Any]) -> dict[str, Any]:
    return raw.get("search") if isinstance(raw.get("search"), dict) else {}


def _space(raw: dict[str, Any]) -> dict[str, Any]:
    space = _search(raw).get("space")
    return space if isinstance(space, dict) else {}


# ---------------------------------------------------------------------------------------------- typed values


@dataclass(frozen=True)
class _Field:
    """A field a spec value lands in: its name for messages, its type alone, and its type with constraints."""

    name: str
    type_text: str
    kind: TypeAdapter  # the type alone: does a sampled int/float/str fit at all?
    full: TypeAdapter  # with the field's constraints (gt=0, ...)


def _type_text(annotation: Any) -> str:
    text = re.sub(r"<class '([\w.]+)'>", r"\1", str(annotation))
    return re.sub(r"\b(?:[a-z_]\w*\.)+(\w+)", r"\1", text.replace("typing.", ""))


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a type pydantic cannot describe: left to TRL's own checks
        return None


def _trl_field(method: str, name: str) -> _Field | None:
    annotation = methods.field_types(method).get(name)
    adapter = _adapter(annotation) if annotation is not None else None
    if adapter is None:
        return None
    return _Field(f"TRL's {methods.CONFIG_CLASSES[method]}.{name}", _type_text(annotation), adapter, adapter)


def _spec_field(key: str) -> _Field | None:
    if key == "method":
        info = Spec.model_fields["method"]
    else:
        section, _, name = key.partition(".")
        section_field = Spec.model_fields.get(section)
        model = getattr(section_field, "annotation", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or name not in model.model_fields:
            return None
        info = model.model_fields[name]
    kind = _adapter(info.annotation)
    full = _adapter(Annotated[(info.annotation, *info.metadata)]) if info.metadata else kind
    if kind is None or full is None:
        return None
    return _Field(key, _type_text(info.annotation), kind, full)


def _fields_of(key: str, methods_: list[str]) -> list[_Field]:
    """The typed fields a value of `key` (`train.beta`, `lora.r`, `method`) lands in, one per possible method."""
    section, _, name = key.partition(".")
    if section == "train" and name:
        return [f for m in methods_ if name in methods.config_fields(m) and (f := _trl_field(m, name))]
    field = _spec_field(key)
    return [field] if field else []


def _candidates(value: Any) -> list[tuple[Any, Any]]:
    """(what to validate, what to keep) for a value: itself first, then the number a YAML 1.1 string spells
    (`1e-2` has no dot, so YAML reads it as text), then whole floats as ints and ints as floats, then a scalar
    where a list is declared (TRL wraps e.g. loss_type: sigmoid into a list itself)."""
    out = [(value, value)]
    number = None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    if number is not None:
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            out.append((int(number), int(number)))
        out.append((float(number), float(number)))
    if not isinstance(value, (list, dict)):
        out.append(([value], value))
    return out


def _fit(field: _Field, value: Any, adapter: TypeAdapter | None = None) -> tuple[Any, str | None]:
    """The value as `field` takes it (coerced from YAML's text where needed), or the reason it does not fit."""
    adapter = adapter or field.full
    for candidate, kept in _candidates(value):
        try:
            adapter.validate_python(candidate, strict=True)
            return kept, None
        except ValidationError:
            continue
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"].endswith(("_type", "literal_error", "is_instance_of", "enum", "union_tag_invalid")):
            return value, f"{field.name} takes {field.type_text}"
        return value, f"{first['msg'][0].lower()}{first['msg'][1:]} ({field.name})"
    return value, None


def typed_values(raw: dict[str, Any]) -> list[str]:
    """Coerce, in place, every value that reaches a typed field (train values, searched values and
    points_to_evaluate) and list the ones that do not fit, each as `yaml.path: why, got VALUE`."""
    problems = []
    methods_ = possible_methods(raw)
    train = raw.get("train")
    if isinstance(train, dict):
        for key, value in list(train.items()):
            for field in _fields_of(f"train.{key}", methods_):
                train[key], why = _fit(field, value)
                if why:
                    problems.append(f"train.{key}: {why}, got {value!r}")
                    break
            else:
                problems += _positive(f"train.{key}", key, [train[key]])
    space = _space(raw)
    for key, distribution in space.items():
        if isinstance(distribution, dict) and not _check_space_key(str(key), methods_):  # else refused as a key
            scope, unscoped = methods.scoped(str(key))
            problems += _check_distribution(unscoped, distribution, [scope] if scope else methods_,
                                            path=f"search.space.{key}")
    points = _search(raw).get("points_to_evaluate")
    for i, point in enumerate(points if isinstance(points, list) else []):
        problems += _typed_settings(f"search.points_to_evaluate.{i}", point, methods_)
    return problems + _typed_settings("search.baseline", _search(raw).get("baseline"), methods_)


def _typed_settings(path: str, settings: Any, methods_: list[str]) -> list[str]:
    """Coerce, in place, the values of `dotted.key: value` settings (a point, the baseline) to their fields."""
    problems = []
    for key, value in list(settings.items()) if isinstance(settings, dict) else []:
        scope, unscoped = methods.scoped(str(key))
        for field in _fields_of(unscoped, [scope] if scope else methods_):
            settings[key], why = _fit(field, value)
            if why:
                problems.append(f"{path}.{key}: {why}, got {value!r}")
                break
    return problems


_SAMPLES = {"loguniform": "fractional numbers", "uniform": "fractional numbers", "int": "whole numbers"}


def _check_distribution(key: str, distribution: dict[str, Any], methods_: list[str], path: str | None = None
                        ) -> list[str]:
    path = path or f"search.space.{key}"
    kind = distribution.get("type")
    problems = []
    for field in _fields_of(key, methods_):
        if kind in ("choice", "grid") and isinstance(distribution.get("values"), list):
            if key == "method":
                continue  # cross_check names unknown methods
            values = distribution["values"]
            for i, value in enumerate(list(values)):
                values[i], why = _fit(field, value)
                if why:
                    problems.append(f"{path}: value {value!r} does not fit: {why}, got {values}")
                    break
            else:
                problems += _positive(path, key.removeprefix("train."), values) if key.startswith("train.") else []
        elif kind in _SAMPLES:
            bounds = {b: distribution.get(b) for b in ("low", "high")}
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bounds.values()):
                continue  # the schema reports missing or non-numeric bounds
            sample = int if kind == "int" else float
            if _fit(field, sample(bounds["low"]), field.kind)[1] is not None or (
                    sample is float and _fit(field, bounds["low"] + 0.5, field.kind)[1] is not None):
                problems.append(f"{path}: type {kind!r} samples {_SAMPLES[kind]}, but {field.name} takes "
                                f"{field.type_text}{' (use type int or choice)' if sample is float else ''}, "
                                f"got {distribution}")
                continue
            for bound, value in bounds.items():
                if (why := _fit(field, sample(value))[1]) is not None:
                    problems.append(f"{path}: {bound} {value:g} does not fit: {why}, got {distribution}")
            if key.startswith("train."):
                problems += _positive(path, key.removeprefix("train."), list(bounds.values()))
        if problems:
            break
    return problems


def _positive(path: str, name: str, values: list[Any]) -> list[str]:
    if name in POSITIVE_TRAIN_FIELDS:
        bad = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0]
        if bad:
            return [f"{path}: must be greater than 0, got {bad[0]!r}"]
    return []


# ---------------------------------------------------------------------------------------------- across sections


def cross_check(raw: dict[str, Any]) -> list[str]:
    """Every cross-section problem, each as `yaml.path: what is wrong, got VALUE`."""
    problems = []
    space = _space(raw)
    possible_methods_ = possible_methods(raw)
    searched_method = space.get("method")
    if isinstance(searched_method, dict) and isinstance(searched_method.get("values"), list):
        unknown = [m for m in searched_method["values"] if m not in methods.CONFIG_CLASSES]
        if unknown:
            problems.append(f"search.space.method: values must be among {sorted(methods.CONFIG_CLASSES)}, got {unknown}")

    train = raw.get("train")
    if isinstance(train, dict):
        for key, value in train.items():
            if key in RESERVED_TRAIN_FIELDS:
                problems.append(f"train.{key}: set by tuner ({RESERVED_TRAIN_FIELDS[key]}), got {value!r}")
            elif check_train_secret(key, value):
                problems += check_train_secret(key, value)
            else:  # a `<secret>_env` reference is checked as the field it stands for
                field = referenced_secret(key) or key
                problems += (_check_train_field(f"train.{key}", field, value, possible_methods_)
                             or _check_method_values(f"train.{key}", key, [value], possible_methods_))

    for key, distribution in space.items():
        scope, unscoped = methods.scoped(str(key))
        values = distribution.get("values") if isinstance(distribution, dict) else None
        problems += _check_space_key(str(key), possible_methods_) or (
            _check_method_values(f"search.space.{key}", unscoped.removeprefix("train."),
                                 values if isinstance(values, list) else [], [scope] if scope else possible_methods_,
                                 searched=True) if unscoped.startswith("train.") else [])
        if scope is not None and unscoped != "method" and unscoped in space:
            problems.append(f"search.space.{key}: {unscoped} is searched for every method already; search it "
                            f"once, scoped or not, got both {unscoped!r} and {key!r}")
    return problems + search_problems(raw, possible_methods_)


def trl_problems(spec: Spec) -> list[str]:
    """What TRL's config classes refuse in the built spec (their __post_init__ checks), for every possible method,
    each named by the `train` key whose value the message mentions where one does."""
    problems = []
    for method in dict.fromkeys(spec.searched_methods()):
        try:
            spec.trl_args(method)
        except Exception as error:  # TRL and transformers raise ValueError, TypeError, ImportError, ...
            text = str(error).strip()
            first = text.splitlines()[0] if text else type(error).__name__
            named = [k for k, v in spec.train.items() if k in text or (isinstance(v, str) and v and v in text)]
            path = f"train.{named[0]}" if len(named) == 1 else "train"
            got = spec.train[named[0]] if len(named) == 1 else spec.train
            problems.append(f"{path}: TRL's {methods.CONFIG_CLASSES[method]} refuses it: {first}, got {got!r}")
    return problems


def _check_train_field(path: str, key: str, value: Any, possible_methods: list[str]) -> list[str]:
    for method in possible_methods:
        if key not in methods.config_fields(method):
            close = methods.closest_fields(method, key)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            return [f"{path}: not a field of TRL's {methods.CONFIG_CLASSES[method]}{hint}, got {value!r}"]
    return []


def _check_method_values(path: str, field: str, values: list[Any], methods_: list[str],
                         searched: bool = False) -> list[str]:
    """A TRL field that a method sets itself (IPO's loss_type) is not the spec's to set or search; a loss type is
    one the method's TRL config knows."""
    for method in methods_:
        fixed = methods.get(method).fixed
        if field in fixed:
            what = "searched" if searched else "set"
            return [f"{path}: {method} sets {field} itself ({fixed[field]!r}), so it cannot be {what}; "
                    f"search `method` for another loss, got {values if searched else values[0]!r}"]
        known = methods.loss_types(method) if field == "loss_type" else None
        named = [v for value in values for v in (value if isinstance(value, list) else [value])]
        unknown = [v for v in named if known is not None and v not in known]
        if unknown:
            return [f"{path}: {methods.CONFIG_CLASSES[method]} knows no loss type {unknown} (it knows "
                    f"{', '.join(sorted(known))}), got {values if searched else values[0]!r}"]
    return []


def _check_space_key(key: str, possible_methods: list[str]) -> list[str]:
    path = f"search.space.{key}"
    scope, unscoped = methods.scoped(key)
    if scope is not None:  # `orpo.train.beta`: train.beta for the trials of one method
        if unscoped == "method" or scope not in possible_methods:
            why = ("a method cannot be scoped to a method" if unscoped == "method" else
                   f"scoped to {scope}, which no trial of this search runs (methods: {possible_methods})")
            return [f"{path}: {why}, got {key!r}"]
        return [problem.replace(f"search.space.{unscoped}:", f"{path}:", 1)
                for problem in _check_space_key(unscoped, [scope])]
    section, _, field = key.partition(".")
    if key == "method":
        return []
    if section == "train" and field:
        if field in RESERVED_TRAIN_FIELDS:
            return [f"{path}: set by tuner, cannot be searched, got {key!r}"]
        if is_secret(field) or referenced_secret(field):
            secret = referenced_secret(field) or field
            return [f"{path}: a secret cannot be searched; {how_to_give(secret)}, got {key!r}"]
        return _check_train_field(path, field, key, possible_methods)
    if section in UNSEARCHABLE_SECTIONS:
        return [f"{path}: {section}.* shapes the search itself and cannot be searched, got {key!r}"]
    for prefix, reason in PREPARED_ONCE.items():
        if key == prefix or section == prefix:
            return [f"{path}: cannot be searched: {reason}, got {key!r}"]
    section_model = Spec.model_fields.get(section)
    annotation = getattr(section_model, "annotation", None) if section_model else None
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or field not in annotation.model_fields:
        return [f"{path}: not a searchable key (use method, train.<TRL field>, lora.<field>, model.<field> or "
                f"data.<field>, or one of them scoped to one method's trials: orpo.train.beta), got {key!r}"]
    return []


