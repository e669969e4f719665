"""The experiment folder, `run.storage_path/NAME/`, and its one owner: `Experiment`.

`run.storage_path` is a local (or NFS) folder, or object storage (`s3://bucket/prefix`, tuner.storage). In object
storage, what tuner itself keeps (the `tuner/` files below, reports) is made in a working copy on this machine's disk
(`Experiment.path`) and uploaded (`publish`); readers download what they need into it (`open`, `local_copy`), and Ray
Tune reads and writes its own files there through the same pyarrow filesystem (`Experiment.location`).

    NAME/                      Tune's experiment state and one folder per trial (checkpoints, result.json)
    NAME/tuner/spec.yaml       the spec as validated (secrets only as `<field>_env` variable names)
    NAME/tuner/data/           the split pairs, prepared once for every trial (Arrow)
    NAME/tuner/data/dpo-reference/   tokenized pairs with the base model's reference log-probs, when shared
    NAME/tuner/data/test/      the test split: prompts no trial, ASHA, Optuna or ranking sees (Arrow)
    NAME/tuner/test_scores.json      per-pair test scores of the base model and the top trials (tuner.scoring)
    NAME/tuner/optuna.db       the Optuna study (SQLite), unless search.storage names another storage
    NAME/tuner/base_metrics.json     the base model's scores on the eval pairs
    NAME/tuner/base_outcomes.json    its per-pair outcomes ({"pairs": [...], "correct": [0/1, ...]})
    NAME/tuner/base_scores.json      its per-pair answer log-probs and token counts (tuner.quality.PairScores)
    NAME/tuner/prepared        written last by `prepare`: everything above is complete
    NAME/tuner/run.lock        pid and host of the live `tuner.run` driver using the folder (its working copy's, in
                               object storage)
    NAME/tuner/cache/          compile caches shared by the trials of this experiment
    NAME/report/               what `python -m analysis` and `analysis.generations` write

`tuner.run` creates and prepares it, `--resume`, the trainable (through the data it is given), `analysis`,
`tuner.export` and `analysis.generations` open it; every one of them asks it for paths, the typed spec, the trials,
their histories and the best trial with its checkpoint. `Experiment.open` reads only a folder the user owns and no
one else can write (tuner.trust), unless told to trust it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tuner import storage
from tuner.errors import InputError, UserError
from tuner.processes import process_alive
from tuner.spec import Spec, load_spec, to_yaml
from tuner.storage import Location
from tuner.trust import check_folder

TUNER_DIR = "tuner"
BY_MODEL = "by_model"  # base_metrics.json's key when model.name is searched: one base per model


class NotAnExperiment(UserError):
    """The folder given is not an experiment tuner (or Ray Tune) wrote."""


@dataclass
class Best:
    """One trial's scored report: the numbers a ranking row shows and the checkpoint holding exactly that adapter."""

    trial_id: str
    method: str
    metric: str
    mode: str
    score: float
    step: int
    report: dict[str, Any]  # every metric of that report
    checkpoint: Path | str | None  # a folder, or a URI in object storage (Experiment.local_copy); None: not kept
    config: dict[str, Any]  # the trial's sampled values


class Experiment:
    def __init__(self, path: str | Path | Location, *, spec: Spec | None = None, trials: pd.DataFrame | None = None,
                 history: pd.DataFrame | None = None):
        self.location = path if isinstance(path, Location) else Location.parse(path, what=str(path))
        # On this machine's disk: the experiment folder itself, or the working copy of one in object storage.
        self.path = Path(self.location.uri) if self.location.is_local else storage.working_copy(self.location)
        self.name = self.location.name
        self._spec = spec
        self._frames = (trials, history) if trials is not None and history is not None else None
        self._current: set[str] = set()  # parts of the working copy known to match the storage
        self._created_root: Path | None = None  # the first local folder `create` made (the folder or a parent)

    @property
    def uri(self) -> str:
        """Where the experiment is stored, as the user gives it to --resume, analysis and export."""
        return self.location.uri

    # ------------------------------------------------------------------------------------------------ layout

    @property
    def tuner_dir(self) -> Path:
        return self.path / TUNER_DIR

    @property
    def spec_file(self) -> Path:
        return self.tuner_dir / "spec.yaml"

    @property
    def data_dir(self) -> Path:
        return self.tuner_dir / "data"

    @property
    def reference_dir(self) -> Path:
        return self.data_dir / "dpo-reference"

    @property
    def test_dir(self) -> Path:
        return self.data_dir / "test"

    @property
    def test_scores_file(self) -> Path:
        return self.tuner_dir / "test_scores.json"

    @functools.cached_property
    def eval_pairs(self) -> int | None:
        """How many eval pairs each trial's eval_pref_accuracy covers: the eval split less its guard groups' pairs
        (None when the prepared data is not there)."""
        eval_dir = self.data_dir / "eval"
        if not self.location.is_dir(self._relative(eval_dir)):
            return None
        from datasets import load_from_disk

        from tuner.quality import pair_groups

        held_out = load_from_disk(str(self.local_copy(eval_dir)))
        guards = set(self.spec.search.guard_groups)
        return sum(1 for group in pair_groups(held_out) or [None] * len(held_out) if group not in guards)

    @property
    def has_test_split(self) -> bool:
        return self.location.is_dir(self._relative(self.test_dir))

    @property
    def optuna_file(self) -> Path:
        return self.tuner_dir / "optuna.db"

    @property
    def optuna_url(self) -> str:
        """The study's storage: `search.storage` when given, else the SQLite file (absolute, from wherever the
        folder, or its working copy, is now)."""
        return self.spec.search.storage or f"sqlite:///{self.optuna_file}"

    @property
    def has_study(self) -> bool:
        return self.spec.search.storage is not None or self.optuna_file.is_file()

    @property
    def base_metrics_file(self) -> Path:
        return self.tuner_dir / "base_metrics.json"

    @property
    def base_outcomes_file(self) -> Path:
        return self.tuner_dir / "base_outcomes.json"

    @property
    def base_scores_file(self) -> Path:
        return self.tuner_dir / "base_scores.json"

    @property
    def cache_dir(self) -> Path:
        return self.tuner_dir / "cache"

    @property
    def prepared_file(self) -> Path:
        return self.tuner_dir / "prepared"

    @property
    def lock_file(self) -> Path:
        return self.tuner_dir / "run.lock"

    @property
    def is_prepared(self) -> bool:
        """Whether `prepare` finished (a driver killed while preparing leaves a folder without it)."""
        return self.prepared_file.is_file()

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def shares_reference(self) -> bool:
        """Whether the driver computed DPO's reference log-probs once for every trial (decided in prepare)."""
        return self.location.is_dir(self._relative(self.reference_dir))

    # ------------------------------------------------------------------------------------------------ life

    @classmethod
    def create(cls, spec: Spec, path: Path | Location) -> Experiment:
        experiment = cls(path, spec=spec)
        path = experiment.path
        if not experiment.location.is_local:
            shutil.rmtree(path, ignore_errors=True)  # a working copy left by an earlier experiment of that URI
        experiment._created_root = path
        while not experiment._created_root.parent.exists():
            experiment._created_root = experiment._created_root.parent
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; results may hold adapters of private data
        experiment.tuner_dir.mkdir(mode=0o700)
        experiment.spec_file.write_text(to_yaml(spec, redact=True))
        try:
            experiment.publish(experiment.spec_file)  # in object storage, the name is taken from now on
        except storage.StorageError as error:  # no write permission, say: nothing of this experiment stays
            shutil.rmtree(path, ignore_errors=True)
            raise InputError(f"run.storage_path: cannot write there: {error}") from None
        return experiment

    def discard(self) -> None:
        """Remove what `create` made (the folder, and storage folders it had to create; in object storage, what was
        uploaded too): a failed start leaves nothing behind. Does nothing to a folder this object did not create."""
        if self._created_root is None:
            return
        if not self.location.is_local:
            try:
                self.location.remove()
            except storage.StorageError:
                pass  # nothing more can be done about it here; the error being reported is the one that matters
        shutil.rmtree(self._created_root, ignore_errors=True)

    def forget_preparation(self) -> None:
        """Remove what `prepare` wrote (for a preparation to start over), keeping the spec."""
        for file in (self.prepared_file, self.base_metrics_file, self.base_outcomes_file, self.base_scores_file,
                     self.test_scores_file):
            file.unlink(missing_ok=True)
        if self.spec.search.storage is None:
            self.optuna_file.unlink(missing_ok=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @contextlib.contextmanager
    def locked(self):
        """Hold the folder's run lock for the block: a second live driver on the same folder (a second --resume)
        is refused; a lock left by a driver that died on this host is taken over."""
        self._acquire_lock()
        try:
            yield self
        finally:
            if _lock_holder(self.lock_file) == _this_process():
                self.lock_file.unlink(missing_ok=True)

    def _acquire_lock(self) -> None:
        me = _this_process()
        self.tuner_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for _ in range(3):
            try:
                fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                holder = _lock_holder(self.lock_file)
                if holder is not None and holder["host"] != me["host"]:
                    raise ExperimentInUse(
                        f"{self.uri} is locked by a tuner run on host {holder['host']} (pid {holder['pid']}), "
                        f"which this machine cannot check; if no run is alive there, delete {self.lock_file}")
                if holder is not None and process_alive(holder["pid"]):
                    raise ExperimentInUse(
                        f"{self.uri} is in use by a live tuner run (pid {holder['pid']}); wait for it to end or stop "
                        f"it (kill -INT {holder['pid']}), then run this again")
                self.lock_file.unlink(missing_ok=True)  # left by a driver that died: take it over
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            return
        raise ExperimentInUse(f"{self.uri}: another tuner run keeps taking its lock ({self.lock_file})")

    @classmethod
    def open(cls, path: str | Path | Location, trust: bool = False) -> Experiment:
        """An existing experiment (finished, interrupted or running), with tuner's files fetched when it lives in
        object storage; raises NotAnExperiment, and UntrustedFolder when a local folder is someone else's or others
        can write to it (unless `trust`: see tuner.trust)."""
        experiment = cls(path)
        if not experiment.location.is_dir():
            raise NotAnExperiment(f"{experiment.uri}: no such folder")
        if experiment.location.is_local:
            check_folder(experiment.path, trust)
        if not any(fnmatch.fnmatch(name, "experiment_state-*.json") for name in experiment.location.listing()):
            raise NotAnExperiment(f"{experiment.uri}: not a Ray Tune experiment folder (no experiment_state-*.json); "
                                  f"pass run.storage_path/NAME as written by tuner.run")
        experiment.fetch_tuner_files()
        return experiment

    # ------------------------------------------------------------------------------------------------ storage

    def publish(self, *items: Path) -> None:
        """Upload files or folders of the working copy to object storage (a local folder is its own storage)."""
        if self.location.is_local:
            return
        for item in items:
            relative = self._relative(item)
            self.location.upload(item, relative)
            self._current.add(relative)

    def fetch_tuner_files(self) -> None:
        """Refresh the working copy's `tuner/` files (spec, base metrics, study, ...) from object storage; the
        folders in it (the prepared data) come on demand through local_copy."""
        if self.location.is_local:
            return
        self.tuner_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, is_folder in self.location.listing(TUNER_DIR).items():
            if not is_folder:
                self.location.download(f"{TUNER_DIR}/{name}", self.tuner_dir / name)
        self._spec = None

    def local_copy(self, item: str | Path) -> Path:
        """A file or folder of the experiment (a path of the layout, or a checkpoint as Best and the history give
        it) on this machine's disk: as it is for a local folder; for object storage, downloaded once into the
        working copy, unless this process made or fetched it there."""
        if self.location.is_local:
            return Path(item)
        relative = self._relative(item)
        local = self.path / relative
        if not any(relative == done or relative.startswith(done + "/") for done in self._current):
            self.location.download(relative, local)
            self._current.add(relative)
        return local

    def _relative(self, item: str | Path) -> str:
        """`item` (a path in the working copy, a URI or a storage path) relative to the experiment."""
        if isinstance(item, Path):
            return item.relative_to(self.path).as_posix()
        relative = self.location.relative(item)
        if relative is None:
            raise NotAnExperiment(f"{item}: not inside the experiment {self.uri}")
        return relative

    # ------------------------------------------------------------------------------------------------ contents

    @property
    def spec(self) -> Spec:
        if self._spec is None:
            self._spec = load_spec(self.spec_file) if self.spec_file.is_file() else Spec()
        return self._spec

    @functools.cached_property
    def _base_metrics(self) -> dict[str, Any]:
        return json.loads(self.base_metrics_file.read_text()) if self.base_metrics_file.is_file() else {}

    @property
    def base(self) -> dict[str, float]:
        """The base model's eval metrics, when tuner.run stored them and the search has one base model."""
        return {} if BY_MODEL in self._base_metrics else self._base_metrics

    def base_scores(self) -> dict[str, Any]:
        """The base model's per-pair scores (tuner.quality.PairScores) by model name: one entry, or one per searched
        model.name; {} when tuner.run stored none."""
        if not self.base_scores_file.is_file():
            return {}
        from tuner.quality import PairScores

        stored = json.loads(self.base_scores_file.read_text())
        by_model = stored[BY_MODEL] if BY_MODEL in stored else {self.spec.model.name: stored}
        return {name: PairScores(**scores) for name, scores in by_model.items()}

    def base_outcomes(self, model_name: str | None = None) -> dict[str, list]:
        """The base model's per-pair outcomes {"pairs": [...], "correct": [...]} (of `model_name` when model.name is
        searched), as each checkpoint's pair_outcomes.json holds a trial's; {} when none was stored."""
        if not self.base_outcomes_file.is_file():
            return {}
        stored = json.loads(self.base_outcomes_file.read_text())
        return stored[BY_MODEL].get(model_name, {}) if BY_MODEL in stored else stored

    def base_of(self, model_name: str) -> dict[str, float]:
        """The eval metrics of one of the base models a search compared (model.name searched), else the base's."""
        return self._base_metrics.get(BY_MODEL, {}).get(model_name, self.base)

    @property
    def trials(self) -> pd.DataFrame:
        return self._read()[0]

    @property
    def history(self) -> pd.DataFrame:
        return self._read()[1]

    def _read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._frames is None:
            from tuner import results

            try:
                self._frames = results.read(self.location, self.spec.method, self.spec.beta)
            except ValueError as error:  # Ray: no experiment state to read
                raise NotAnExperiment(f"{self.uri}: Ray Tune cannot read it ({error})") from None
        return self._frames

    def reload(self) -> Experiment:
        """Read Tune's files again (after more trials ran)."""
        self._frames = None
        return self

    # ------------------------------------------------------------------------------------------------ answers

    def ranking(self, metric: str | None = None, mode: str | None = None, method: str | None = None,
                scope: str = "best") -> pd.DataFrame:
        """The trials (of `method`, or all) ranked on `metric` (default: what the search ranks on)."""
        from tuner.ranking import PREF_ACCURACY_METRIC, rank_trials

        metric = metric or (self.spec.metric_for(method) if method else self.spec.metric)
        trials, history = self.trials, self.history
        if method is not None:
            trials = trials[trials["method"] == method]
            history = history[history["trial_id"].isin(trials["trial_id"])]
        ranked = rank_trials(trials, history, metric, mode or self.spec.search.mode, scope, base=self.base)
        if BY_MODEL in self._base_metrics and "pref_accuracy_at_best" in ranked and "config/model.name" in ranked:
            base = ranked["config/model.name"].map(lambda name: self.base_of(name).get(PREF_ACCURACY_METRIC))
            ranked["pref_gain"] = ranked["pref_accuracy_at_best"] - base.astype(float)
        return self.with_intervals(ranked)

    def with_intervals(self, ranked: pd.DataFrame) -> pd.DataFrame:
        """The ranking with each trial's 95% interval and whether it is tied with the leader (share metrics only):
        from the per-pair outcomes saved in the ranked report's checkpoint when there are some, else from the
        score and the number of eval pairs."""
        from tuner.ranking import CHECKPOINT_COLUMN, PREF_ACCURACY_METRIC, add_intervals

        outcomes = {}  # read where they are on this disk; in object storage, the intervals come from the scores
        if (ranked.attrs.get("metric") == PREF_ACCURACY_METRIC and CHECKPOINT_COLUMN in self.history
                and self.location.is_local):
            for _, row in ranked[ranked["rank"].notna()].iterrows():
                checkpoint = self.history.loc[int(row["report"]), CHECKPOINT_COLUMN]
                found = read_pair_outcomes(checkpoint) if isinstance(checkpoint, str) else None
                if found is not None:
                    outcomes[row["trial_id"]] = found
        return add_intervals(ranked, self.eval_pairs, outcomes)

    def best(self, metric: str | None = None, mode: str | None = None, method: str | None = None,
             trial_id: str | None = None) -> Best | None:
        """The best trial (or the named one) with its scored report and that report's checkpoint; None when no
        trial has a finite score. Ranking, export, generations and the final table all ask this."""
        ranked = self.ranking(metric, mode, method)
        if trial_id is not None:
            row = ranked[ranked["trial_id"] == trial_id]
            if row.empty or pd.isna(row.iloc[0]["score"]):
                return None
        else:
            row = ranked[ranked["rank"] == 1]
            if row.empty:
                return None
        row = row.iloc[0]
        report = self.history.loc[int(row["report"])].to_dict()
        checkpoint = report.get("checkpoint_path")
        return Best(
            trial_id=row["trial_id"], method=row["method"], metric=ranked.attrs["metric"], mode=ranked.attrs["mode"],
            score=float(row["score"]), step=int(row["score_step"]),
            report={k: _plain(v) for k, v in report.items()},
            checkpoint=(Path(checkpoint) if self.location.is_local else checkpoint) if isinstance(checkpoint, str)
            else None,
            config={c.removeprefix("config/"): _plain(row[c]) for c in ranked.columns if c.startswith("config/")},
        )


def _plain(value):
    return value.item() if hasattr(value, "item") else value


class ExperimentInUse(InputError):
    """Another live driver holds the experiment folder's run lock."""


def _this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _lock_holder(lock_file: Path) -> dict[str, Any] | None:
    """The pid and host written in a lock file; None when it is missing or unreadable (a driver killed mid-write)."""
    try:
        holder = json.loads(lock_file.read_text())
        return {"pid": int(holder["pid"]), "host": str(holder["host"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_pair_outcomes(checkpoint: str | Path) -> list[int] | None:
    """The eval preference-accuracy outcome of each pair at that checkpoint, when the trial saved them."""
    from tuner.quality import OUTCOMES_FILE

    path = Path(checkpoint) / OUTCOMES_FILE
    if not path.is_file():
        return None
    try:
        return [int(bool(v)) for v in json.loads(path.read_text())["correct"]]
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------- before creating


def default_name(spec: Spec) -> str:
    return f"{'-'.join(spec.searched_methods())}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_storage(storage_path: str, name: str) -> Location:
    """Where the experiment will be, after checking that it can be created there; raises InputError. Writes
    nothing: a local folder is checked for permissions, object storage is asked (with short timeouts) whether its
    bucket exists."""
    if not name or "/" in name or name in (".", ".."):
        raise InputError(f"run.name: must be a plain folder name, got {name!r}")
    base = Location.parse(storage_path)
    location = base.child(name)
    if not base.is_local:
        base.probe()
        if location.exists():
            raise InputError(f"run.name: {location.uri} already exists; choose another --name, or continue it with "
                             f"--resume {location.uri}")
        return location
    path = Path(location.uri)
    if path.exists():
        raise InputError(f"run.name: {path} already exists; choose another --name, or continue it with "
                         f"--resume {path}")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"run.storage_path: {existing} is a file, not a folder, got {storage_path!r}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"run.storage_path: cannot create folders under {existing} (no write permission), "
                         f"got {storage_path!r}")
    return location


def check_wandb(mode: str) -> None:
    import importlib.util

    if mode != "off" and importlib.util.find_spec("wandb") is None:
        raise InputError(f"run.wandb: {mode!r} needs the wandb package: pip install -e '.[wandb]' "
                         f"(or set run.wandb: off), got {mode!r}")
    if mode == "online" and not _wandb_key_available():
        raise InputError("run.wandb: 'online' needs a W&B API key: set WANDB_API_KEY in the environment (or run "
                         "`wandb login`), or log offline (run.wandb: offline) and `wandb sync` later, got 'online'")


def _wandb_key_available() -> bool:
    """Where Ray's WandbLoggerCallback finds a key: the environment, a key hook, or `wandb login`'s netrc entry."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_SETUP_API_KEY_HOOK"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_eval_pairs(spec: Spec, held_out) -> str | None:
    """Refuse a model.max_length at which truncation leaves no eval pair with an answer to score (the held-out
    preference accuracy would never be reported, and Ray stops a search on it at the first report); a line for the
    user when it leaves only some. With model.max_length or model.name searched, the shortest length and each
    model's tokenizer count."""
    from transformers import AutoTokenizer

    from tuner import models, quality

    max_length = quality.shortest_max_length(spec)
    note = None
    for name in spec.model_names():
        tokenizer = AutoTokenizer.from_pretrained(models.resolve(name))
        if not tokenizer.chat_template and len(held_out) and not isinstance(held_out[0]["prompt"], str):
            raise InputError(f"model.name: {name} has no chat template, which the conversations of data.source "
                             f"{spec.data.source!r} need; use a chat model, or data in text, got {name!r}")
        lengths = quality.pair_lengths(tokenizer, held_out)
        scored = sum(needed <= max_length for needed, _ in lengths)
        whole = max((w for _, w in lengths), default=0)
        model = f" with {name}" if len(spec.model_names()) > 1 else ""
        if lengths and scored == 0:
            raise InputError(f"model.max_length: truncating to {max_length} tokens{model} leaves no eval pair with an "
                             f"answer to score (the prompts alone fill it in all {len(lengths)}), so "
                             f"{quality.METRIC} would never be reported; raise model.max_length to at least "
                             f"{min(n for n, _ in lengths)} ({whole} keeps every eval pair whole), got {max_length}")
        if scored < len(lengths) and note is None:
            note = (f"eval: {len(lengths) - scored} of {len(lengths)} eval pairs lose their answer to truncation at "
                    f"model.max_length={max_length}{model} and are not scored by {quality.METRIC} ({whole} keeps "
                    f"every pair whole)")
    return note


def check_guard_groups(spec: Spec, held_out) -> str | None:
    """Refuse guard groups that cover every eval pair (the search metric would have no pair). A guard group with no
    eval pair (data without that group, or an eval split capped below one pair per group) guards nothing: a line
    for the user says so, and the search runs without it, as it would on another data set than the spec's."""
    from tuner.quality import pair_groups

    guards = spec.search.guard_groups
    if not guards:
        return None
    present = sorted(set(pair_groups(held_out)))
    if present and not set(present) - set(guards):
        raise InputError(f"search.guard_groups: every eval group is a guard, which leaves no pairs for the search "
                         f"metric (eval groups {present}), got {guards}")
    missing = [g for g in guards if g not in present]
    if not missing:
        return None
    where = (f"the eval groups are {present}" if present else
             "the eval pairs have no groups (data.group_column)")
    return (f"search.guard_groups: no eval pair is in {', '.join(missing)} ({where}): "
            f"{'no guard applies' if len(missing) == len(guards) else 'those guard nothing'}")


def check_address(address: str | None) -> None:
    """Fail fast on a Ray address where nothing listens, instead of Ray's minute of retries."""
    if not address or address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address: expected HOST:PORT of a Ray head node (ray start --head prints it), "
                         f"got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as error:
        raise InputError(f"--address: no Ray head node answers at {address} ({error.strerror or error}); "
                         f"start one with `ray start --head`, or leave --address out for a local Ray") from None


# ---------------------------------------------------------------------------------------------- preparing


def prepare(spec: Spec, experiment: Experiment, train, held_out, test=None) -> list[str]:
    """Everything every trial needs and no trial should redo; returns lines for the user. `test`, the test split, is
    only saved: nothing in the search reads it. Starts over from what an unfinished preparation left, and marks the
    folder prepared (`experiment.prepared_file`) last."""
    from tuner import quality

    experiment.forget_preparation()

    available = len(train)
    consumed = spec.rows_consumed()
    if consumed is not None and consumed < available:
        # Pairs past this count are never seen by any trial: tokenizing them and running the reference over them
        # would be wasted. The pairs kept are the first of the seeded shuffle, so still a random sample.
        train = train.select(range(consumed))
    held_out = quality.with_pair_ids(held_out)  # pair ids that every trial's per-pair outcomes refer to
    held_out = _by_prompt(held_out)
    train.save_to_disk(str(experiment.data_dir / "train"))
    held_out.save_to_disk(str(experiment.data_dir / "eval"))
    if test is not None:
        test = _by_prompt(quality.with_pair_ids(test))
        test.save_to_disk(str(experiment.test_dir))
    used = f" ({len(train)} used: train.max_steps x batch)" if len(train) < available else ""
    tested = (f", {len(test)} test pairs scored only when the search ends (no prompt in two splits)"
              if test is not None else " (no prompt in both; no test split)")
    lines = [f"data: {available} train pairs{used}, {len(held_out)} eval pairs{tested}"]
    # One pass of each base model over the pairs gives DPO's shared reference and the base model's scores on the
    # eval pairs (the reference log-probs are the base model's log-probs); without a shared reference, it runs over
    # the eval pairs only. The test pairs are not run through any model before the search ends: the base model is
    # scored on them then, with the top trials (tuner.scoring), so that no trial waits for it.
    # tuner.model_passes runs them as Ray tasks where the trials run, or reuses them from an earlier search.
    from tuner import model_passes

    by_model, more = model_passes.prepare_passes(spec, experiment, train, held_out, _described)
    lines += more
    _write_base(experiment, by_model)
    _mark_prepared(experiment)
    return lines


def _by_prompt(pairs):
    """The pairs of one prompt side by side: a batch then runs each prompt once for all its answers
    (tuner.logprobs), which makes a pass over many pairs per prompt about 30% cheaper (eval rounds, test scoring)."""
    prompts = [str(prompt) for prompt in pairs["prompt"]]
    return pairs.select(sorted(range(len(pairs)), key=prompts.__getitem__))


def _mark_prepared(experiment: Experiment) -> None:
    experiment.prepared_file.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    experiment.publish(experiment.prepared_file)


def _write_base(experiment: Experiment, by_model: dict) -> None:
    """base_metrics.json, base_outcomes.json and base_scores.json (the eval pairs): the one base model's, or keyed
    by model name under BY_MODEL when model.name is searched. `by_model`: model name -> PairScores."""
    def keyed(values: dict) -> dict:
        return next(iter(values.values())) if len(values) == 1 else {BY_MODEL: values}

    guards = experiment.spec.search.guard_groups
    experiment.base_metrics_file.write_text(json.dumps(keyed({n: s.metrics(guard_groups=guards)
                                                              for n, s in by_model.items()})))
    experiment.base_outcomes_file.write_text(json.dumps(keyed({n: s.outcomes(guards) for n, s in by_model.items()})))
    experiment.base_scores_file.write_text(json.dumps(keyed({n: asdict(s) for n, s in by_model.items()})))
    experiment.publish(experiment.data_dir, experiment.base_metrics_file, experiment.base_outcomes_file,
                       experiment.base_scores_file)  # once; in object storage only


def _described(metrics: dict[str, float]) -> str:
    """The base model's eval measures in one line: the selection measures, then the accuracy per group."""
    overall = ", ".join(f"{k} = {v:.3f}" for k, v in metrics.items() if "/" not in k)
    groups = [f"{k.split('/', 1)[1]} {v:.2f}" for k, v in metrics.items() if "/" in k]
    return overall + (f" (per group: {', '.join(groups)})" if groups else "")
