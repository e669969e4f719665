"""The experiment folder's run lock (`tuner/run.lock`): one live driver per folder. A second driver on the same
folder (a second --resume) is refused; a lock left by a driver that died on this host is taken over."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from tuner.errors import InputError
from tuner.experiment.processes import process_alive


class ExperimentInUse(InputError):
    """Another live driver holds the experiment folder's run lock."""


@contextlib.contextmanager
def held(lock_file: Path, uri: str):
    """Hold the lock for the block (`uri`: the experiment, as errors name it)."""
    acquire(lock_file, uri)
    try:
        yield
    finally:
        if lock_holder(lock_file) == this_process():
            lock_file.unlink(missing_ok=True)


def acquire(lock_file: Path, uri: str) -> None:
    me = this_process()
    lock_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for _ in range(3):
        try:
            fd = os.open(lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            holder = lock_holder(lock_file)
            if holder is not None and holder["host"] != me["host"]:
                raise ExperimentInUse(
                    f"{uri} is locked by a tuner run on host {holder['host']} (pid {holder['pid']}), "
                    f"which this machine cannot check; if no run is alive there, delete {lock_file}")
            if holder is not None and process_alive(holder["pid"]):
                raise ExperimentInUse(
                    f"{uri} is in use by a live tuner run (pid {holder['pid']}); wait for it to end or stop "
                    f"it (kill -INT {holder['pid']}), then run this again")
            lock_file.unlink(missing_ok=True)  # left by a driver that died: take it over
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return
    raise ExperimentInUse(f"{uri}: another tuner run keeps taking its lock ({lock_file})")


def this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def lock_holder(lock_file: Path) -> dict[str, Any] | None:
    """The pid and host written in a lock file; None when it is missing or unreadable (a driver killed mid-write)."""
    try:
        holder = json.loads(lock_file.read_text())
        return {"pid": int(holder["pid"]), "host": str(holder["host"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None
