"""The search spec: one YAML file, validated by pydantic, whose errors name their YAML path and the value received.

Every problem is listed at once (`SpecError.problems`); unknown keys are errors. Fields of `train` belong to TRL's
`DPOConfig` / `ORPOConfig` and are passed through to it, their names checked against the dataclass.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuner import methods

EMBEDDED_MODEL = "embedded"
BUNDLED_DATA = "bundled"

# Set by tuner for every trial: a user value would break reporting or checkpointing.
RESERVED_TRAIN_FIELDS = {
    "output_dir": "each trial writes under run.storage_path",
    "report_to": "tuner reports to Ray Tune; use run.wandb for W&B",
    "eval_strategy": "tuner evaluates every train.eval_steps steps, which is what Tune ranks and ASHA stops on",
    "save_strategy": "adapters are saved as Tune checkpoints at every evaluation",
    "do_eval": "tuner always evaluates",
    "logging_dir": "each trial logs under run.storage_path",
}
# Sections whose fields a search may not sample: they shape the search itself.
UNSEARCHABLE_SECTIONS = {"search", "scheduler", "resources", "run"}


class SpecError(Exception):
    """Every problem found in a spec, each as `yaml.path: what is wrong, got VALUE`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(_Section):
    name: str = EMBEDDED_MODEL
    max_length: int = Field(256, ge=16)
    backend: Literal["auto", "unsloth", "hf"] = "auto"
    load_in_4bit: bool = True


class Columns(_Section):
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"


class DataSpec(_Section):
    source: str = BUNDLED_DATA
    split: str = "train"
    columns: Columns = Columns()
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    eval_source: str | None = None
    eval_split: str = "test"
    max_rows: int | None = Field(None, gt=0)
    max_eval_rows: int | None = Field(None, gt=0)
    seed: int = 0


class LoraSpec(_Section):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class Distribution(_Section):
    """One searched parameter: loguniform/uniform/int take low and high (both included), choice/grid take values."""

    type: Literal["loguniform", "uniform", "int", "choice", "grid"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Distribution:
        if self.type in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"{self.type} needs a non-empty list `values`, got {self.values!r}")
            if self.low is not None or self.high is not None:
                raise ValueError(f"{self.type} takes `values`, not low/high")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs `low` and `high`, got low={self.low} high={self.high}")
        if self.values is not None:
            raise ValueError(f"{self.type} takes low/high, not `values`")
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got low={self.low:g} high={self.high:g}")
        if (self.type == "loguniform" or self.log) and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, got low={self.low:g}")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"int needs whole bounds, got low={self.low:g} high={self.high:g}")
        return self


class SearchSpec(_Section):
    metric: str | None = None
    mode: Literal["max", "min"] = "max"
    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    seed: int = 0
    num_samples: int = Field(8, gt=0)
    max_concurrent_trials: int = Field(2, gt=0)
    points_to_evaluate: list[dict[str, Any]] = []
    space: dict[str, Distribution] = {}
    # DPO: tokenize the pairs and compute the frozen reference model's log-probs once per search, not per trial.
    share_reference: bool = True


class SchedulerSpec(_Section):
    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2, gt=1)
    max_t: int | None = Field(None, ge=1)


class ResourcesSpec(_Section):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _whole_gpus_above_one(cls, gpu: float) -> float:
        if gpu > 1 and gpu != int(gpu):
            raise ValueError(f"above 1 must be a whole number of GPUs, got {gpu:g}")
        return gpu


class RunSpec(_Section):
    name: str | None = None
    storage_path: str = "./results"
    wandb: Literal["off", "offline", "online"] = "off"
    wandb_project: str = "tuner"
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=-1)  # retries of a failed trial (-1: forever); others go on either way
    dashboard_host: str = "127.0.0.1"  # a local Ray's dashboard; 0.0.0.0 exposes it to the network

    @field_validator("wandb", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class Spec(_Section):
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    method: Literal["dpo", "orpo"] = "dpo"
    train: dict[str, Any] = {}
    lora: LoraSpec = LoraSpec()
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    run: RunSpec = RunSpec()

    @property
    def metric(self) -> str:
        return self.search.metric or methods.DEFAULT_METRIC[self.method]

    @property
    def eval_batch_size(self) -> int:
        return self.train.get("per_device_eval_batch_size", 8)  # TRL's default

    def searched_methods(self) -> list[str]:
        searched = self.search.space.get("method")
        return list(searched.values) if searched is not None else [self.method]


# ---------------------------------------------------------------------------------------------- loading


def load_spec(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read a YAML spec, apply `key=value` overrides and validate; raises SpecError listing every problem."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SpecError([f"{path}: no such spec file"])
        try:
            raw = yaml.safe_load(path.read_text()) or {}
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
    return validate_spec(raw, problems)


def validate_spec(raw: dict[str, Any], problems: list[str] | None = None) -> Spec:
    problems = list(problems or [])
    spec = None
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as error:
        problems += [_describe(e) for e in error.errors()]
    problems += _cross_check(raw)
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


def _cross_check(raw: dict[str, Any]) -> list[str]:
    """Checks that span sections; run on the raw dict so that they add to, not wait for, pydantic's errors."""
    problems = []
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    space = search.get("space") if isinstance(search.get("space"), dict) else {}
    method = raw.get("method", "dpo")
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
            else:
                problems += _check_train_field(f"train.{key}", key, value, possible_methods)

    for key in space:
        problems += _check_space_key(str(key), possible_methods)
    algorithm = search.get("algorithm", "optuna")
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
        return _check_train_field(path, field, key, possible_methods)
    if section in UNSEARCHABLE_SECTIONS:
        return [f"{path}: {section}.* shapes the search itself and cannot be searched, got {key!r}"]
    section_model = Spec.model_fields.get(section)
    annotation = getattr(section_model, "annotation", None) if section_model else None
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or field not in annotation.model_fields:
        return [f"{path}: not a searchable key (use method, train.<TRL field>, lora.<field>, model.<field> or "
                f"data.<field>), got {key!r}"]
    return []


# ---------------------------------------------------------------------------------------------- dotted keys


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts; under search.space the rest is a searched key that may itself hold dots."""
    parts = key.split(".")
    if parts[:2] == ["search", "space"] and len(parts) > 2:
        space = raw.setdefault("search", {}).setdefault("space", {})
        rest = ".".join(parts[2:])
        for searched in sorted(space, key=len, reverse=True):
            if rest.startswith(searched + "."):
                _set_path(space[searched], rest[len(searched) + 1 :].split("."), value, key)
                return
        space[rest] = value
        return
    if parts[0] == "train" and len(parts) > 1:
        raw.setdefault("train", {})[".".join(parts[1:])] = value
        return
    _set_path(raw, parts, value, key)


def _set_path(node: dict[str, Any], parts: list[str], value: Any, key: str) -> None:
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"{key}: {part} is not a section")
    node[parts[-1]] = value


def with_sampled(spec: Spec, sampled: dict[str, Any]) -> Spec:
    """The spec a trial runs: the sampled `dotted.key: value` pairs applied and validated again."""
    raw = copy.deepcopy(spec.model_dump(mode="json"))
    for key, value in sampled.items():
        set_dotted(raw, key, value)
    return validate_spec(raw)


SECRET_WORDS = ("token", "secret", "password", "api_key", "apikey", "credential")


def redacted(value: Any) -> Any:
    """The value with every entry whose key names a secret (hub_token, api_key, ...) replaced by '***'."""
    if isinstance(value, dict):
        return {k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) and v not in (None, "") else redacted(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def to_yaml(spec: Spec, redact: bool = True) -> str:
    """The spec as YAML, secrets redacted unless asked otherwise: for files, terminals and logs."""
    data = spec.model_dump(mode="json")
    return yaml.safe_dump(redacted(data) if redact else data, sort_keys=False)
