"""Reading a spec: the YAML file, dotted `key=value` overrides, validation listing every problem at once, and the
spec a trial runs (sampled values applied)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tuner.spec.checks import cross_check, trl_problems, typed_values
from tuner.spec.schema import Spec, SpecError
from tuner.trial import methods

# A spec is a few hundred values; YAML aliases can make a small file expand into billions (an "alias bomb") that
# every later step (validation, writing spec.yaml, Tune's config) would walk.
MAX_SPEC_VALUES = 100_000


def size_problem(raw: Any) -> str | None:
    """A problem when the spec expands (through YAML aliases) to more than MAX_SPEC_VALUES values; bounded work."""
    count, stack = 0, [raw]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_SPEC_VALUES:
            return (f"(top level): the spec expands to more than {MAX_SPEC_VALUES} values (YAML aliases repeated "
                    f"inside each other?); write the values out")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def load_spec(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read a YAML spec, apply `key=value` overrides and validate; raises SpecError listing every problem."""
    raw, problems = read_spec(path, overrides)
    try:
        return validate_spec(raw, problems)
    except SpecError as error:
        error.source = str(path) if path is not None else None
        raise


def read_spec(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any],
                                                                                           list[str]]:
    """The raw spec with the overrides applied, not validated, and the overrides that could not be applied;
    raises SpecError when the file cannot be read as a YAML mapping. Cheap: it imports no training library."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SpecError([f"{path}: no such spec file"])
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as error:
            raise SpecError([f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                             f"{error.start}); save the spec as UTF-8"]) from None
        except OSError as error:
            raise SpecError([f"{path}: cannot read it: {error.strerror or error}"]) from None
        except yaml.YAMLError as error:
            raise SpecError([f"{path}: not valid YAML: {error}"]) from None
        if not isinstance(raw, dict):
            raise SpecError([f"{path}: the top level must be a mapping, got {type(raw).__name__}"])
    problems: list[str] = []
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            problems.append(f"override {override!r}: expected key=value, e.g. search.num_samples=2")
            continue
        try:
            set_dotted(raw, key, yaml.safe_load(text))
        except (ValueError, yaml.YAMLError) as error:
            problems.append(f"override {override!r}: {error}")
    return raw, problems


def validate_spec(raw: dict[str, Any], problems: list[str] | None = None) -> Spec:
    """The typed Spec of a raw dict (left unchanged), or SpecError listing every problem at once."""
    problems = list(problems or [])
    if too_big := size_problem(raw):
        raise SpecError([*problems, too_big])
    raw = copy.deepcopy(raw)
    problems += typed_values(raw)  # coerces YAML's text numbers (1e-2) to the field's type first
    spec = None
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as error:
        problems += [_describe(e) for e in error.errors()]
    problems += cross_check(raw)
    if not problems and spec is not None:
        problems += trl_problems(spec)
    if problems:
        raise SpecError(sorted(set(problems), key=problems.index))
    assert spec is not None
    return spec


def _describe(error: dict[str, Any]) -> str:
    path = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key, got {error['input']!r}"
    if error["type"] == "missing":
        return f"{path}: required"
    if "got " in message:
        return f"{path}: {message}"
    return f"{path}: {message}, got {error['input']!r}"


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts; under search.space the rest is a searched key that may itself hold dots."""
    parts = key.split(".")
    if parts[:2] == ["search", "space"] and len(parts) > 2:
        space = _section(_section(raw, "search", key), "space", key)
        rest = ".".join(parts[2:])
        for searched in sorted(space, key=len, reverse=True):
            if rest.startswith(searched + "."):
                _set_path(space[searched], rest[len(searched) + 1 :].split("."), value, key)
                return
        space[rest] = value
        return
    if parts[0] == "train" and len(parts) > 1:
        _section(raw, "train", key)[".".join(parts[1:])] = value
        return
    _set_path(raw, parts, value, key)


def _set_path(node: dict[str, Any], parts: list[str], value: Any, key: str) -> None:
    for part in parts[:-1]:
        node = _section(node, part, key)
    node[parts[-1]] = value


def _section(node: dict[str, Any], part: str, key: str) -> dict[str, Any]:
    """node[part] as a dict to set values in; an absent or empty (`train:` alone, i.e. null) section starts empty."""
    if node.get(part) is None:
        node[part] = {}
    if not isinstance(node[part], dict):
        raise ValueError(f"{key}: {part} is not a section, got {node[part]!r}")
    return node[part]


# The config key that marks the baseline trial (search.baseline) in Tune's configs: True there, False in the search's
# own trials; not a setting, so never applied to a spec.
BASELINE_KEY = "baseline"


def with_sampled(spec: Spec, sampled: dict[str, Any]) -> Spec:
    """The spec a trial runs: the sampled `dotted.key: value` pairs applied (those scoped to the trial's method,
    `orpo.train.beta`, unscoped; those scoped to another left out) and validated again."""
    raw = copy.deepcopy(spec.model_dump(mode="json"))
    sampled = {key: value for key, value in sampled.items() if key != BASELINE_KEY}
    for key, value in methods.for_method(sampled, sampled.get("method", spec.method)).items():
        set_dotted(raw, key, value)
    return validate_spec(raw)


