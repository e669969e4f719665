"""The spec's schema: one pydantic model per YAML section, and the values derived from it.

Fields of `train` belong to TRL's `DPOConfig` / `ORPOConfig` and are passed through to it; what they amount to
(steps per trial, batch sizes, beta, eval rounds) is read from the built config object, never restated here.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from tuner.errors import UserError
from tuner.experiment import storage
from tuner.spec.secrets import resolved
from tuner.trial import methods

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


class SpecError(UserError):
    """Every problem found in a spec, each as `yaml.path: what is wrong, got VALUE`."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source  # the spec file, when there is one
        super().__init__("\n".join(problems))

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{len(self.problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in self.problems)


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


BUNDLED_GROUP_COLUMN = "kind"  # the bundled pairs' failure mode (wrong_fact, repetition, ..., style_matched)


class DataSpec(_Section):
    source: str = BUNDLED_DATA
    split: str = "train"
    columns: Columns = Columns()
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    eval_source: str | None = None
    eval_split: str = "test"
    # Prompts held out from the whole search (no trial, ASHA, Optuna or ranking sees them), scored once when it
    # ends; 0: no test split. Or a separate source: test_source + test_split.
    test_fraction: float = Field(0.2, ge=0, lt=1)
    test_source: str | None = None
    test_split: str = "test"
    group_column: str | None = None  # a column whose values group the pairs in per-group results
    # Only these groups in the eval split, which ASHA, Optuna and the ranking select on (the test split keeps all).
    eval_groups: list[str] | None = None
    max_rows: int | None = Field(None, gt=0)
    max_eval_rows: int | None = Field(None, gt=0)
    max_test_rows: int | None = Field(None, gt=0)
    seed: int = 0
    drop_bad_rows: bool = False  # rows missing a field, empty, not text, or chosen == rejected: refuse the file

    @model_validator(mode="after")
    def _room_for_training(self) -> DataSpec:
        carved = (self.eval_fraction if self.eval_source is None else 0) + \
            (self.test_fraction if self.test_source is None else 0)
        if carved >= 1:
            raise ValueError(f"eval_fraction + test_fraction must leave prompts for training, got "
                             f"{self.eval_fraction:g} + {self.test_fraction:g}")
        return self

    @model_validator(mode="after")
    def _split_of_a_source(self) -> DataSpec:
        # eval_split and test_split name splits of eval_source and test_source: without one, a split would be
        # carved from data.source by fraction and the named split silently not read.
        for name in ("eval", "test"):
            split = getattr(self, f"{name}_split")
            if split != "test" and getattr(self, f"{name}_source") is None:
                raise ValueError(f"{name}_split names a split of {name}_source, which is not set (for a split of "
                                 f"data.source, set {name}_source to the same source), got {name}_split={split!r}")
        return self

    @property
    def groups(self) -> str | None:
        """The column that groups pairs: group_column, else the bundled data's `kind`."""
        if self.group_column is not None:
            return self.group_column
        return BUNDLED_GROUP_COLUMN if self.source == BUNDLED_DATA else None

    @property
    def has_test(self) -> bool:
        return self.test_source is not None or self.test_fraction > 0


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


def _distinct(values: list[Any]) -> int:
    return len({repr(v) for v in values})


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
    # When the search ends: how many of the top trials (by the search metric) are scored once on the test split,
    # beside the base model; 0 scores none.
    test_top_k: int = Field(3, ge=0)
    # Groups of pairs (data.group_column) that must not get worse than the base model: the search metric's pair
    # measures (eval_pref_accuracy, eval_pref_margin) cover the other groups, and a trial clearly worse than the base
    # model on a guard group is stopped by ASHA, infeasible to Optuna and never ranked first (tuner.evidence.quality).
    guard_groups: list[str] = []
    # One trial at the settings a user would run without the search (tuner.search.space.baseline_config): searched
    # keys to values; the searched keys it leaves out keep the spec's own values (the train section, else TRL's
    # default). It trains the full budget, is not raced, does not count in num_samples and never ranks; the test
    # split compares the winner with it. `true` is `{}`: every searched key at the spec's own value.
    baseline: dict[str, Any] | None = None

    @field_validator("baseline", mode="before")
    @classmethod
    def _baseline_shorthand(cls, value: Any) -> Any:
        return {} if value is True else None if value is False else value

    @field_validator("guard_groups")
    @classmethod
    def _distinct_guards(cls, groups: list[str]) -> list[str]:
        repeated = sorted({g for g in groups if groups.count(g) > 1})
        if repeated:
            raise ValueError(f"each group once, got {repeated} more than once")
        return groups
    # The Optuna study: an RDB URL or a journal file path (tuner.search.study); None: SQLite in the experiment's tuner
    # folder.
    storage: str | None = None

    def samples_nothing(self) -> bool:
        """Whether no key of the space is sampled: no space, or grid keys and choices of one value only. Such a
        search is a list of configurations known before it starts (tuner.search.space.planned_trials), whatever
        `algorithm` says: there is nothing for Optuna to choose."""
        return all(d.type == "grid" or (d.type == "choice" and _distinct(d.values) == 1) for d in self.space.values())

    def uses_optuna(self) -> bool:
        """Whether an Optuna study samples the trials (and so exists in the experiment)."""
        return self.algorithm == "optuna" and not self.samples_nothing()

    @field_validator("storage")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url is not None and (shown := storage.with_credentials_hidden(url)) is not None:
            raise ValueError(f"{storage.PASSWORD_IN_URL}, got {shown!r}")
        if url is not None and not url.strip():
            raise ValueError("expected a database URL or a journal file path, or leave it out, got ''")
        return url


class SchedulerSpec(_Section):
    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2, gt=1)
    max_t: int | None = Field(None, ge=1)
    # Pause a trial at the first rung while configurations wait for their first turn: every configuration gets
    # a first score early (the time to signal), and paused trials resume from their checkpoints afterwards.
    pause_at_first_rung: bool = True


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

    @field_validator("storage_path")
    @classmethod
    def _no_credentials(cls, path: str) -> str:
        if (shown := storage.with_credentials_hidden(path, usernames_too=True)) is not None:
            raise ValueError(f"{storage.CREDENTIALS_IN_URI}, got {shown!r}")
        return path

    @field_validator("wandb", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class Spec(_Section):
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    method: Literal[tuple(methods.METHODS)] = "dpo"  # type: ignore[valid-type]  # tuner.trial.methods' registry
    train: dict[str, Any] = {}
    lora: LoraSpec = LoraSpec()
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    run: RunSpec = RunSpec()
    _trl_args: dict[str, Any] = PrivateAttr(default_factory=dict)  # built once per method

    @property
    def metric(self) -> str:
        return self.search.metric or methods.DEFAULT_METRIC[self.method]

    def metric_for(self, method: str) -> str:
        """What trials of `method` are ranked on: the search metric, else that method's own default."""
        return self.search.metric or methods.DEFAULT_METRIC[method]

    def model_names(self) -> list[str]:
        """Every base model a trial may load: the searched model.name values, else model.name."""
        searched = self.search.space.get("model.name")
        return [str(v) for v in searched.values] if searched is not None and searched.values else [self.model.name]

    def searched_methods(self) -> list[str]:
        searched = self.search.space.get("method")
        return list(searched.values) if searched is not None else [self.method]

    def train_values(self, with_secrets: bool = False) -> dict[str, Any]:
        """The train section as TRL takes it: each `<field>_env` reference resolved to the secret it names (with
        `with_secrets`: only the trial that trains), else left out (tuner.spec.secrets.resolved)."""
        return resolved(self.train, with_secrets)

    # ------------------------------------------------------------------ derived from TRL's own config object

    def trl_args(self, method: str | None = None):
        """TRL's DPOConfig / ORPOConfig as a trial builds it (the source of every default below)."""
        method = method or self.method
        if method not in self._trl_args:
            spec = self if method == self.method else self.model_copy(update={"method": method})
            self._trl_args[method] = methods.training_args(spec, output_dir="unused", on_gpu=False,
                                                           device_free=True)
        return self._trl_args[method]

    @property
    def eval_batch_size(self) -> int:
        return self.trl_args().per_device_eval_batch_size

    def train_batch(self) -> int:
        """Pairs per optimizer step: per-device batch x gradient accumulation."""
        args = self.trl_args()
        return args.per_device_train_batch_size * args.gradient_accumulation_steps

    def beta(self, method: str | None = None) -> float:
        return float(self.trl_args(method).beta)

    def steps_per_trial(self, train_rows: int) -> int:
        args = self.trl_args()
        if args.max_steps > 0:
            return args.max_steps
        return math.ceil(train_rows / self.train_batch()) * math.ceil(args.num_train_epochs)

    def eval_rounds(self, train_rows: int) -> int:
        """How many times a trial that is never stopped evaluates (one report to Tune each)."""
        steps = self.steps_per_trial(train_rows)
        eval_steps = self.trl_args().eval_steps
        if eval_steps < 1:  # TRL reads a float below 1 as a share of all steps
            eval_steps = max(1, math.ceil(steps * eval_steps))
        return max(1, math.ceil(steps / eval_steps))

    def rows_consumed(self) -> int | None:
        """How many train pairs a trial can see (max_steps x batch), when no searched key changes it."""
        if any(f"train.{f}" in self.search.space for f in TRAIN_LENGTH_FIELDS):
            return None
        max_steps = self.trl_args().max_steps
        return max_steps * self.train_batch() if max_steps > 0 else None


TRAIN_LENGTH_FIELDS = ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps")
# Every TRL field that changes how many eval rounds (reports to Tune, ASHA's time unit) a trial runs.
EVAL_ROUND_FIELDS = (*TRAIN_LENGTH_FIELDS, "num_train_epochs", "eval_steps")
