"""Checks that span sections of a spec. They run on the raw dict, so that they add to pydantic's errors instead of
waiting for them; defaults are read from the schema, never restated."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tuner import methods
from tuner.spec.secrets import check_train_secret, how_to_give, is_secret, referenced_secret
from tuner.spec.schema import RESERVED_TRAIN_FIELDS, UNSEARCHABLE_SECTIONS, SearchSpec, Spec


def cross_check(raw: dict[str, Any]) -> list[str]:
    """Every cross-section problem, each as `yaml.path: what is wrong, got VALUE`."""
    problems = []
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    space = search.get("space") if isinstance(search.get("space"), dict) else {}
    method = raw.get("method", Spec.model_fields["method"].default)
    possible_methods = [method] if method in methods.CONFIG_CLASSES else []
    searched_method = space.get("method")
    if isinstance(searched_method, dict) and isinstance(searched_method.get("values"), list):
        possible_methods = [m for m in searched_method["values"] if m in methods.CONFIG_CLASSES]
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
                problems += _check_train_field(f"train.{key}", field, value, possible_methods)

    for key in space:
        problems += _check_space_key(str(key), possible_methods)
    algorithm = search.get("algorithm", SearchSpec.model_fields["algorithm"].default)
    types = {key: d.get("type") for key, d in space.items() if isinstance(d, dict)}
    if algorithm == "optuna" and "grid" in types.values():
        problems.append(f"search.space: grid values need search.algorithm grid or random, got algorithm='optuna' "
                        f"with grid keys {[k for k, t in types.items() if t == 'grid']}")
    if algorithm == "grid":
        sampled = [k for k, t in types.items() if t not in ("grid", "choice")]
        if sampled:
            problems.append(f"search.space: algorithm 'grid' takes only grid or choice, got sampled keys {sampled}")
    for i, point in enumerate(search.get("points_to_evaluate") or []):
        if isinstance(point, dict):
            extra = [k for k in point if k not in space]
            if extra:
                problems.append(f"search.points_to_evaluate.{i}: keys must be searched keys {sorted(space)}, got {extra}")
            missing = [k for k in space if k not in point]
            if algorithm == "optuna" and missing and not extra:
                problems.append(f"search.points_to_evaluate.{i}: Optuna needs a value for every searched key, "
                                f"missing {missing} (algorithm random fills them in), got {point}")

    if search.get("metric") is None and len(set(possible_methods)) > 1:
        problems.append(f"search.metric: required when method is searched (each method reports its own metric; "
                        f"eval_loss is reported by both), got None")
    return problems


def _check_train_field(path: str, key: str, value: Any, possible_methods: list[str]) -> list[str]:
    for method in possible_methods:
        if key not in methods.config_fields(method):
            close = methods.closest_fields(method, key)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            return [f"{path}: not a field of TRL's {methods.CONFIG_CLASSES[method]}{hint}, got {value!r}"]
    return []


def _check_space_key(key: str, possible_methods: list[str]) -> list[str]:
    path = f"search.space.{key}"
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
    section_model = Spec.model_fields.get(section)
    annotation = getattr(section_model, "annotation", None) if section_model else None
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or field not in annotation.model_fields:
        return [f"{path}: not a searchable key (use method, train.<TRL field>, lora.<field>, model.<field> or "
                f"data.<field>), got {key!r}"]
    return []


