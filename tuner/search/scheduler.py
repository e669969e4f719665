"""ASHA as a search runs it: NaN-safe, stopping a trial that breaks a guard group, and pausing trials at the first
rung while configurations wait to start.

Imports Ray Tune: imported only by the function that builds the scheduler (tuner.search.build).
"""

from __future__ import annotations

import math

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.utils import flatten_dict

from tuner.evidence.quality import GUARD_BROKEN
from tuner.spec import BASELINE_KEY

# What ASHA sees in place of a NaN or infinite metric, or of a report that breaks a guard group: the worst value,
# finite so that its percentiles stay numbers.
WORST_FOR_ASHA = 1e300


def breaks_guard(result: dict | None) -> bool:
    """Whether a report is clearly worse than the base model on a guard group (search.guard_groups)."""
    value = (result or {}).get(GUARD_BROKEN)
    return isinstance(value, (int, float)) and value > 0


def is_baseline(trial) -> bool:
    """Whether the trial is the baseline at the user's own settings (search.baseline)."""
    return bool((getattr(trial, "config", None) or {}).get(BASELINE_KEY))


class NanSafeASHA(ASHAScheduler):
    """ASHA that ranks a NaN or infinite metric as the worst value, and, with `pause_at_first_rung`, pauses a
    trial that reaches the first rung (grace_period eval rounds) while configurations are still waiting to
    start: no trial trains past the first rung while one waits (the time to signal). Once all have started, a
    paused trial ends if it is below the rung's cutoff among the scores there are, else resumes from the
    checkpoint it reported there (optimizer state included).
    A report clearly worse than the base model on a guard group (search.guard_groups) stops its trial at once,
    and counts as the worst value on ASHA's rung.

    Ray's ASHA compares `value < cutoff`, which is False for NaN, so a diverged trial would never be stopped.
    Only the scheduler sees the substitute; the reported result (and so the ranking, which never ranks NaN)
    keeps the NaN."""

    def __init__(self, *, grace_period: int, pause_at_first_rung: bool = False,
                 max_running: int | None = None, **kwargs):
        super().__init__(grace_period=grace_period, **kwargs)
        self.first_rung = grace_period
        self.pause_at_first_rung = pause_at_first_rung
        self.max_running = max_running  # search.max_concurrent_trials, which a resumed trial counts in
        self.ending: set[str] = set()  # trials that made their last report, or that ASHA stopped

    def _sanitized(self, result: dict) -> dict:
        value = result.get(self._metric)
        if (isinstance(value, (int, float)) and not math.isfinite(value)) or breaks_guard(result):
            # a trial clearly worse than the base model on a guard group is stopped at the next rung
            return {**result, self._metric: -WORST_FOR_ASHA * self._metric_op}
        return result

    def on_trial_result(self, tune_controller, trial, result):
        if is_baseline(trial):
            # The user's own settings (search.baseline) run as the user would run them: to the end, on no rung,
            # whatever its guard groups say (the test split reports them).
            if result.get("step", 0) >= result.get("max_steps", math.inf):
                self.ending.add(trial.trial_id)
            return TrialScheduler.CONTINUE
        decision = super().on_trial_result(tune_controller, trial, self._sanitized(result))
        if breaks_guard(result):  # training on moves further from the base model, not back to it
            decision = TrialScheduler.STOP
        if decision == TrialScheduler.CONTINUE and self._pauses_at(tune_controller, result):
            tune_controller.search_alg.searcher.on_pause(trial.trial_id)
            return TrialScheduler.PAUSE
        if decision == TrialScheduler.STOP or result.get("step", 0) >= result.get("max_steps", math.inf):
            self.ending.add(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller, trial, result):
        if is_baseline(trial):
            return None  # on no rung (on_trial_result)
        return super().on_trial_complete(tune_controller, trial, self._sanitized(result))

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        if trial.trial_id in tune_controller.search_alg.searcher.paused_trials:
            # Paused when the driver stopped, and requeued by --resume as pending (Tune would start it at once,
            # past the running-trial limit and unjudged): it stays paused, its first-rung score back on the rung
            # (ASHA's rungs are not saved), to be judged or resumed in its turn. Tune files the trial under its
            # status after this call.
            trial.set_status(Trial.PAUSED)
            self._record_first_rung(trial)

    def _record_first_rung(self, trial) -> None:
        result = self._sanitized(trial.last_result)
        rung = self._first_rung_of(trial)
        if rung is not None and result.get(self._time_attr) == self.first_rung and self._metric in result:
            rung[1][trial.trial_id] = self._metric_op * result[self._metric]

    def _first_rung_of(self, trial):
        """ASHA's first rung in the trial's bracket, as (bracket, {trial id: score}); None if it has none."""
        bracket = self._trial_info.get(trial.trial_id)
        for milestone, recorded in bracket._rungs if bracket is not None else []:
            if milestone == self.first_rung:
                return bracket, recorded
        return None

    def choose_trial_to_run(self, tune_controller):
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        if self.pause_at_first_rung and not tune_controller.search_alg.is_finished():
            return None  # a paused trial waits until every configuration has had its turn
        # A trial that is ending frees its place: the paused one is queued before that trial's process stops,
        # which Tune then keeps for it (a process started afresh costs seconds of imports).
        running = sum(trial.status == Trial.RUNNING and trial.trial_id not in self.ending for trial in trials)
        if self.max_running is not None and running >= self.max_running:
            return None  # the searcher's limit holds new trials only
        for trial in trials:
            if trial.status != Trial.PAUSED:
                continue
            if self.below_first_rung_cutoff(trial):
                # Ended where it paused, as ASHA ends a running trial: the searcher gets its score first (Tune
                # would tell it of a paused trial's end without one, which Optuna records as pruned, no value).
                tune_controller.search_alg.on_trial_complete(trial.trial_id,
                                                             result=flatten_dict(trial.last_result))
                tune_controller.stop_trial(trial)
                _saved_with_the_next_state(tune_controller, trial)
                continue
            tune_controller.search_alg.searcher.on_unpause(trial.trial_id)
            return trial
        return None

    def below_first_rung_cutoff(self, trial) -> bool:
        """Whether the trial's first-rung score is below the rung's cutoff now. ASHA let the first trials pass
        the rung against the few scores there were when they reached it; a paused trial is judged again against
        every score the rung holds when it would resume, as synchronous successive halving judges."""
        rung = self._first_rung_of(trial)
        if rung is None or trial.trial_id not in rung[1]:
            return False
        bracket, recorded = rung
        cutoff = bracket.cutoff(recorded)
        return cutoff is not None and recorded[trial.trial_id] < cutoff

    def _pauses_at(self, tune_controller, result: dict) -> bool:
        # Exactly at the first rung, so a trial resumed (or restored by --resume) past it never pauses again;
        # never at a trial's last report, which ends it anyway.
        return (self.pause_at_first_rung and result.get(self._time_attr) == self.first_rung
                and not result.get("done") and result.get("step", 0) < result.get("max_steps", math.inf)
                and self._configurations_waiting(tune_controller))

    def _configurations_waiting(self, tune_controller) -> bool:
        # A pending trial that has reported is a paused one on its way back, not a configuration still waiting
        # (Tune's last_result always holds the trial id).
        return (not tune_controller.search_alg.is_finished()
                or any(trial.status == Trial.PENDING and self._time_attr not in trial.last_result
                       for trial in tune_controller.get_trials()))


def _saved_with_the_next_state(tune_controller, trial) -> None:
    """Ray Tune (2.60) writes a trial into the search's saved state only when something marks it: a start, a
    report, the stop of its live process. A paused trial has no process, so its end would never be written, and the
    folder would hold it as paused from the last save before: the run would end as stopped early, with a resume
    command and no test split. Marked here, through the controller the scheduler's wrapper holds."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    mark = getattr(controller, "_mark_trial_to_checkpoint", None)
    if mark is not None:
        mark(trial)
