"""The searchers a search runs: Optuna's TPE over a study that may be ahead of Tune's snapshot, and Tune's random and
grid generator, each under a running-trial limit that counts a trial paused at the first rung out.

Imports Ray Tune and Optuna: imported only by the function that builds the searcher (tuner.search.build).
"""

from __future__ import annotations

import optuna
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from tuner.evidence.quality import GUARD_BROKEN

GUARD_ATTR = "guard_broken"  # the Optuna trial's user attribute: guard groups its last report broke


def guard_constraint(trial) -> list[float]:
    """Optuna's constraints_func: feasible (<= 0) when the trial's last report held every guard group, so that TPE
    learns where the guard breaks instead of treating those trials as good or as missing."""
    return [float(trial.user_attrs.get(GUARD_ATTR, 0.0))]


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch over a study in SQLite that may be ahead of Tune's last snapshot.

    After a driver is killed, the study can already hold the end of a trial that Tune's (periodic) snapshot
    still calls running; Tune then resumes that trial from its last checkpoint and reports it again. The
    study keeps the value it has instead of failing the search.
    """

    def on_trial_result(self, trial_id, result):
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def on_trial_complete(self, trial_id, result=None, error=False):
        try:
            if trial_id in self._ot_trials and result and GUARD_BROKEN in result:
                self._ot_trials[trial_id].set_user_attr(GUARD_ATTR, float(result[GUARD_BROKEN]))
            super().on_trial_complete(trial_id, result, error)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._ot_trials.pop(trial_id, None)


class BaselineFirst(Searcher):
    """A searcher whose first trial is the baseline (search.baseline) at its given config; every later one is the
    wrapped searcher's. The baseline's reports never reach that searcher: Optuna learns from the search's own
    trials only, and the baseline, often outside the space, is no point of its study."""

    def __init__(self, searcher: Searcher, config: dict):
        self.searcher, self.config = searcher, dict(config)
        self.baseline_trial: str | None = None
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str):
        if self.baseline_trial is None:
            self.baseline_trial = trial_id
            return dict(self.config)
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id != self.baseline_trial:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        if trial_id != self.baseline_trial:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

    # Tune saves a wrapper's state (get_state) beside the wrapped searcher's own file, and sets it again on --resume
    # into the wrapper built afresh: the baseline's trial id with it, so a resumed search never runs it twice.
    def get_state(self) -> dict:
        return {"baseline_trial": self.baseline_trial, "config": dict(self.config)}

    def set_state(self, state: dict) -> None:
        self.baseline_trial = state["baseline_trial"]


class _PausedTrialsCountedOut:
    """A running-trial limit that counts a paused trial out until it resumes. The scheduler tells it (on_pause,
    on_unpause), as Ray's HyperBandForBOHB tells its searcher through `search_alg.searcher`; only TuneBOHB, which
    tuner does not use, has these hooks itself."""

    paused_trials: set[str]

    def _live(self) -> set[str]:  # the trials the limit counts
        raise NotImplementedError

    def on_pause(self, trial_id: str):
        if trial_id in self._live():
            self._live().remove(trial_id)
            self.paused_trials.add(trial_id)

    def on_unpause(self, trial_id: str):
        if trial_id in self.paused_trials:
            self.paused_trials.remove(trial_id)
            self._live().add(trial_id)

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.on_unpause(trial_id)  # a paused trial can end (stopped, errored) without running again
        super().on_trial_complete(trial_id, result=result, error=error)


class RunningTrialsLimiter(_PausedTrialsCountedOut, ConcurrencyLimiter):
    """Tune's ConcurrencyLimiter, whose `max_concurrent` counts a paused trial out until it resumes."""

    def __init__(self, searcher, max_concurrent: int):
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.paused_trials = set()

    def _live(self) -> set[str]:
        return self.live_trials


class PauseAwareVariantGenerator(_PausedTrialsCountedOut, BasicVariantGenerator):
    """Tune's random and grid generator, whose `max_concurrent` counts a paused trial out until it resumes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.paused_trials = set()
        self.created = 0

    def _live(self) -> set[str]:
        return self._live_trials

    def next_trial(self):
        trial = super().next_trial()
        self.created += trial is not None
        return trial

    def is_finished(self) -> bool:
        # Ray's generator finishes when its iterator runs dry, one call after the last trial was created: under
        # the running limit, only after that trial's first turn. Every trial created is finished here, so the
        # last configuration to start never pauses for nothing.
        return super().is_finished() or 0 < self.total_samples <= self.created

    @property
    def searcher(self):  # where the scheduler finds the pause hooks, as on a SearchGenerator
        return self
