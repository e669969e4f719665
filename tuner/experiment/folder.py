"""The experiment folder, `run.storage_path/NAME/`, and its one owner: `Experiment`.

`run.storage_path` is a local (or NFS) folder, or object storage (`s3://bucket/prefix`, tuner.experiment.storage). In
object storage, what tuner itself keeps (the `tuner/` files below, reports) is made in a working copy on this machine's
disk (`Experiment.path`) and uploaded (`publish`); readers download what they need into it (`open`, `local_copy`), and
Ray Tune reads and writes its own files there through the same pyarrow filesystem (`Experiment.location`).

    NAME/                      Tune's experiment state and one folder per trial (checkpoints, result.json)
    NAME/tuner/spec.yaml       the spec as validated (secrets only as `<field>_env` variable names)
    NAME/tuner/data/           the split pairs, prepared once for every trial (Arrow)
    NAME/tuner/data/dpo-reference/   tokenized pairs with the base model's reference log-probs, when shared
    NAME/tuner/data/test/      the test split: prompts no trial, ASHA, Optuna or ranking sees (Arrow)
    NAME/tuner/test_scores.json      per-pair test scores of the base model and the top trials (tuner.evidence.scoring)
    NAME/tuner/passes.json     how the base model's passes load it, and where each ran (tuner.passes.tasks)
    NAME/tuner/optuna.db       the Optuna study (SQLite), unless search.storage names another storage
    NAME/tuner/base_metrics.json     the base model's scores on the eval pairs
    NAME/tuner/base_outcomes.json    its per-pair outcomes ({"pairs": [...], "correct": [0/1, ...]})
    NAME/tuner/base_scores.json      its per-pair answer log-probs and token counts (tuner.evidence.quality.PairScores)
    NAME/tuner/prepared        written last by `prepare`: everything above is complete
    NAME/tuner/run.lock        pid and host of the live `tuner.run` driver using the folder (its working copy's, in
                               object storage)
    NAME/tuner/cache/          compile caches shared by the trials of this experiment
    NAME/report/               what `python -m analysis` and `analysis.generations` write

`tuner.run` creates and prepares it, `--resume`, the trainable (through the data it is given), `analysis`,
`tuner.export` and `analysis.generations` open it; every one of them asks it for paths, the typed spec, the trials,
their histories and the best trial with its checkpoint. `Experiment.open` reads only a folder the user owns and no
one else can write (tuner.experiment.trust), unless told to trust it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tuner.errors import InputError, UserError
from tuner.experiment import lock, storage
from tuner.experiment.storage import Location
from tuner.experiment.trust import check_folder
from tuner.spec import Spec, load_spec, to_yaml

if TYPE_CHECKING:
    from tuner.experiment.ranking import Best

TUNER_DIR = "tuner"
BY_MODEL = "by_model"  # base_metrics.json's key when model.name is searched: one base per model


class NotAnExperiment(UserError):
    """The folder given is not an experiment tuner (or Ray Tune) wrote."""


class _Inside:
    """A path of the experiment, as a read-only attribute: `name` inside the folder that attribute `parent` is."""

    def __init__(self, parent: str, name: str):
        self.parent, self.name = parent, name

    def __get__(self, experiment, owner=None) -> Path:
        return getattr(experiment, self.parent) / self.name


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

    # The experiment's own files, each named once here (the layout in this module's docstring).
    spec_file = _Inside("tuner_dir", "spec.yaml")
    data_dir = _Inside("tuner_dir", "data")
    reference_dir = _Inside("data_dir", "dpo-reference")
    test_dir = _Inside("data_dir", "test")
    test_scores_file = _Inside("tuner_dir", "test_scores.json")
    passes_file = _Inside("tuner_dir", "passes.json")
    optuna_file = _Inside("tuner_dir", "optuna.db")
    base_metrics_file = _Inside("tuner_dir", "base_metrics.json")
    base_outcomes_file = _Inside("tuner_dir", "base_outcomes.json")
    base_scores_file = _Inside("tuner_dir", "base_scores.json")
    prepared_file = _Inside("tuner_dir", "prepared")
    lock_file = _Inside("tuner_dir", "run.lock")
    cache_dir = _Inside("tuner_dir", "cache")

    @functools.cached_property
    def eval_pairs(self) -> int | None:
        """How many eval pairs each trial's eval_pref_accuracy covers: the eval split less its guard groups' pairs
        (None when the prepared data is not there)."""
        eval_dir = self.data_dir / "eval"
        if not self.location.is_dir(self._relative(eval_dir)):
            return None
        from datasets import load_from_disk

        from tuner.evidence.quality import pair_groups

        held_out = load_from_disk(str(self.local_copy(eval_dir)))
        guards = set(self.spec.search.guard_groups)
        return sum(1 for group in pair_groups(held_out) or [None] * len(held_out) if group not in guards)

    @property
    def has_test_split(self) -> bool:
        return self.location.is_dir(self._relative(self.test_dir))

    @property
    def optuna_url(self) -> str:
        """The study's storage: `search.storage` when given, else the SQLite file (absolute, from wherever the
        folder, or its working copy, is now)."""
        return self.spec.search.storage or f"sqlite:///{self.optuna_file}"

    @property
    def has_study(self) -> bool:
        return self.spec.search.storage is not None or self.optuna_file.is_file()

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
                     self.test_scores_file, self.passes_file):
            file.unlink(missing_ok=True)
        if self.spec.search.storage is None:
            self.optuna_file.unlink(missing_ok=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @contextlib.contextmanager
    def locked(self):
        """Hold the folder's run lock for the block: a second live driver on the same folder (a second --resume)
        is refused; a lock left by a driver that died on this host is taken over (tuner.experiment.lock)."""
        with lock.held(self.lock_file, self.uri):
            yield self

    @classmethod
    def open(cls, path: str | Path | Location, trust: bool = False) -> Experiment:
        """An existing experiment (finished, interrupted or running), with tuner's files fetched when it lives in
        object storage; raises NotAnExperiment, and UntrustedFolder when a local folder is someone else's or others
        can write to it (unless `trust`: see tuner.experiment.trust)."""
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
        """The base model's per-pair scores (tuner.evidence.quality.PairScores) by model name: one entry, or one per
        searched model.name; {} when tuner.run stored none."""
        if not self.base_scores_file.is_file():
            return {}
        from tuner.evidence.quality import PairScores

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
            from tuner.experiment import results

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
                scope: str = "best", baseline: bool = False) -> pd.DataFrame:
        """The trials (of `method`, or all) ranked on `metric` (default: what the search ranks on). The baseline
        trial (search.baseline) is never among them: `baseline=True` ranks it alone, its best report picked by the
        rule every trial's is."""
        from tuner.experiment.ranking import PREF_ACCURACY_METRIC, rank_trials

        metric = metric or (self.spec.metric_for(method) if method else self.spec.metric)
        trials, history = self.ranked_trials(baseline), self.history
        if method is not None:
            trials = trials[trials["method"] == method]
        if len(trials) != len(self.trials):
            history = history[history["trial_id"].isin(trials["trial_id"])]
        ranked = rank_trials(trials, history, metric, mode or self.spec.search.mode, scope, base=self.base)
        if BY_MODEL in self._base_metrics and "pref_accuracy_at_best" in ranked and "config/model.name" in ranked:
            base = ranked["config/model.name"].map(lambda name: self.base_of(name).get(PREF_ACCURACY_METRIC))
            ranked["pref_gain"] = ranked["pref_accuracy_at_best"] - base.astype(float)
        return self.with_intervals(ranked)

    def ranked_trials(self, baseline: bool = False) -> pd.DataFrame:
        """The trials a ranking covers: the search's own, without the baseline trial (search.baseline), which is
        compared with the winner and never ranked; `baseline=True`: that trial alone."""
        trials = self.trials
        if "baseline" not in trials:
            return trials.iloc[0:0] if baseline else trials
        return trials[trials["baseline"].fillna(False).astype(bool) == baseline]

    def with_intervals(self, ranked: pd.DataFrame) -> pd.DataFrame:
        """The ranking with each trial's 95% interval and whether it is tied with the leader (share metrics only):
        from the per-pair outcomes saved in the ranked report's checkpoint when there are some, else from the
        score and the number of eval pairs."""
        from tuner.experiment.ranking import add_intervals, saved_outcomes

        # read where they are on this disk; in object storage, the intervals come from the scores
        outcomes = saved_outcomes(ranked, self.history) if self.location.is_local else {}
        return add_intervals(ranked, self.eval_pairs, outcomes)

    def best(self, metric: str | None = None, mode: str | None = None, method: str | None = None,
             trial_id: str | None = None, baseline: bool = False) -> Best | None:
        """The best trial (or the named one) with its scored report and that report's checkpoint; None when no
        trial has a finite score. Ranking, export, generations and the final table all ask this. `baseline`: the
        baseline trial (search.baseline) at its best report instead, None without one."""
        from tuner.experiment.ranking import Best, plain

        trials = self.trials
        if trial_id is not None and "baseline" in trials:  # a named trial is found wherever it is
            baseline = bool(trials.loc[trials["trial_id"] == trial_id, "baseline"].any())
        ranked = self.ranking(metric, mode, method, baseline=baseline)
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
            report={k: plain(v) for k, v in report.items()},
            checkpoint=(Path(checkpoint) if self.location.is_local else checkpoint) if isinstance(checkpoint, str)
            else None,
            config={c.removeprefix("config/"): plain(row[c]) for c in ranked.columns if c.startswith("config/")},
        )
