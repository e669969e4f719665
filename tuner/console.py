"""What a search prints: the driver's own lines, a compact trial table refreshed now and then, and the answer last.

Quiet by default: the libraries' progress bars, INFO lines and per-trial metric dicts go nowhere in the driver, and
a trial's own output goes to `trial.log` in its folder. `--verbose` leaves every library as it is.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

from tuner.trial import methods

TRIAL_LOG = "trial.log"
# The trial table: first after REFRESH_S of reports, then at gaps that double up to LONGEST_GAP_S, so that the
# whole console stays short (a 7-minute search prints 3 tables, an hour-long one about 14) and the long wait of a
# long search still shows progress every few minutes.
REFRESH_S = 30.0
LONGEST_GAP_S = 300.0


def quiet_environment() -> None:
    """The environment variables and log levels of a quiet driver; imports nothing, and comes before Ray starts:
    Ray's processes read these variables from the environment they inherit. With quiet_libraries, before the
    libraries print anything."""
    os.environ["TQDM_DISABLE"] = "1"  # TRL's reference pass and every tqdm bar honour it
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's newer console prints its header boxes even when silent
    warnings.filterwarnings("ignore")
    for name in ("ray", "ray.tune", "ray.train", "optuna", "datasets", "transformers", "trl", "peft", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # A failed trial is one line here (and a row in the final table) pointing at its log, which holds the
    # traceback (errors_to_log); Tune's ERROR lines would print that traceback again, 70 lines of it.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)


def quiet_libraries() -> None:
    """The libraries' own switches for their progress bars and verbosity (importing them: about a second)."""
    import datasets
    import optuna
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial_output_to_log(trial_dir: str) -> Path:
    """Send this trial process's stdout and stderr (file descriptors, so C code and subprocesses too) to
    `trial.log` in its folder. A reused trial process calls it again for its next trial."""
    path = Path(trial_dir) / TRIAL_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    return path


def errors_to_log(trial_function):
    """Wrap a Tune function trainable so that an exception's traceback also goes to the trial's own output (its
    trial.log, once trial_output_to_log ran): Ray keeps it only in error.txt, and a quiet driver does not print it.
    A verbose run (`verbose=True` among the trainable's keyword arguments) already shows Tune's copy."""

    @functools.wraps(trial_function)
    def run(config, **kwargs):
        try:
            return trial_function(config, **kwargs)
        except Exception:
            if not kwargs.get("verbose"):
                traceback.print_exc()
                sys.stderr.flush()
            raise

    return run


def format_table(rows: dict[str, dict], metric: str, searched: list[str]) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    def used(row: dict, key: str) -> bool:  # a key scoped to another method than the trial's was not used
        scope = methods.scoped(key)[0]
        return scope is None or row.get("method", scope) == scope

    header = ["trial", "status", "step", metric, *searched]
    body = [[trial_id, *(cell(row.get(k, "-")) if used(row, k) else "-" for k in header[1:])]
            for trial_id, row in rows.items()]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    done = sum(row["status"] in ("DONE", "ERROR") for row in rows.values())
    lines = [f"trials: {done}/{len(rows)} ended, {time.strftime('%H:%M:%S')}"]
    lines += ["  " + "  ".join(str(v).ljust(w) for v, w in zip(line, widths)) for line in [header, *body]]
    return "\n".join(lines)
