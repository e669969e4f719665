"""Test-only fault injection: with `TUNER_FAULT=<point>` in the environment, the process kills itself with SIGKILL
when it reaches the named point, so that tests can check what a killed driver leaves (and what --resume makes of
it) at a chosen moment instead of racing a timer. Points: `prepare.reference` (data saved,
reference pass not yet run)."""

from __future__ import annotations

import os
import signal

ENV = "TUNER_FAULT"


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
