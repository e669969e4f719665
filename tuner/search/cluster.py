"""Which Ray a search runs on: the cluster at `--address` (or `$RAY_ADDRESS`), else a Ray of its own that only
this machine can reach, in a folder only this user can enter.

A local Ray is started with `address="local"`: a bare `ray.init()` attaches to whatever cluster
`/tmp/ray/ray_current_cluster` names, a file in a folder Ray makes writable by everyone. Its node address is the
loopback one (Ray's single-machine mode, its default on macOS and Windows), so the GCS, the raylet, the workers, the
dashboard agent and the runtime-env agent listen on 127.0.0.1 only; the dashboard listens on `run.dashboard_host`
(127.0.0.1 unless widened). Its temp folder (sessions, logs, sockets, Tune's staged results) lives under a fresh
0700 folder in /tmp, removed when the search ends: Ray makes its own folders there writable by everyone.
"""

from __future__ import annotations

import ipaddress
import os
import contextlib
import shutil
import time
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import InputError

# Ray reads this once, when ray._private.ray_constants is imported: "0" makes the node address 127.0.0.1.
SINGLE_MACHINE_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
# Short: Ray's Unix socket paths (TEMP/session_<date>_<pid>/sockets/plasma_store) must fit in 107 bytes.
TEMP_ROOT = "/tmp"


@dataclass
class RaySession:
    context: Any  # what ray.init returned (dashboard_url, address_info)
    private_dir: Path | None = None  # a local Ray's 0700 folder, removed by stop()
    _restore: dict[str, Any] = field(default_factory=dict)
    _keeper: threading.Event | None = None  # set by stop(): ends the thread that started this Ray (EarlyStart)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(address: str | None, dashboard_host: str, environ=os.environ) -> None:
    """Refuse a local Ray whose dashboard is reachable beyond this machine while Ray's token authentication is
    off: the dashboard's job API runs any code it is sent, as you (ShadowRay, CVE-2023-48022)."""
    if address or is_loopback(dashboard_host):
        return
    if environ.get(AUTH_MODE_VARIABLE, "").strip().lower() == "disabled":
        raise InputError(
            f"run.dashboard_host: with {AUTH_MODE_VARIABLE}=disabled, a dashboard on {dashboard_host} lets anyone "
            f"who can reach this machine run code on it as you (Ray's job API needs no token then); keep it on "
            f"127.0.0.1 and tunnel to it (ssh -L 8265:127.0.0.1:8265 HOST), or leave Ray's token authentication "
            f"on (unset {AUTH_MODE_VARIABLE}), got {dashboard_host!r}")


def start(address: str | None, dashboard_host: str = "127.0.0.1", verbose: bool = False) -> RaySession:
    """Attach to the cluster at `address`; without one, start a private local Ray (see the module's docstring).
    Quiet runs keep Ray's lines and the workers' output out of the driver (each trial writes its own log)."""
    import logging

    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
    if address:
        import ray

        _no_failure_handler_for_sigterm()
        session = RaySession(ray.init(address=address, **quiet))
        _sigterm_as_ctrl_c()
        return session
    session = RaySession(None, _restore=_single_machine_mode())
    session.private_dir = Path(tempfile.mkdtemp(prefix=f"tuner-{os.getuid()}-{os.getpid()}-", dir=TEMP_ROOT))
    import ray

    _no_failure_handler_for_sigterm()
    try:
        # include_dashboard None, not True: Ray starts the dashboard whenever its packages (ray[default]) are
        # installed, and a minimal Ray (the GPU device's carried site has no aiohttp) runs without one.
        session.context = ray.init(address="local", include_dashboard=None, dashboard_host=dashboard_host,
                                   _temp_dir=str(session.private_dir / "ray"), **quiet)
    except BaseException:
        stop(session)
        raise
    _sigterm_as_ctrl_c()
    return session


def _remove_when_released(folder: Path, within_s: float = 10.0) -> None:
    """Remove a local Ray's private folder. ray.shutdown() returns while its last processes (the log monitor, the
    dashboard's agents) may still write their files there, and a removal racing them leaves the folder behind:
    retry until it is gone, for a few seconds at most."""
    deadline = time.monotonic() + within_s
    while True:
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists() or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def stop(session: RaySession) -> None:
    """Disconnect (a local Ray: stop it and remove its private folder)."""
    import ray

    ray.shutdown()
    if session.private_dir is not None:
        _remove_when_released(session.private_dir)
    previous = session._restore
    if SINGLE_MACHINE_VARIABLE in previous:
        if previous[SINGLE_MACHINE_VARIABLE] is None:
            os.environ.pop(SINGLE_MACHINE_VARIABLE, None)
        else:
            os.environ[SINGLE_MACHINE_VARIABLE] = previous[SINGLE_MACHINE_VARIABLE]
    if "constant" in previous:
        _set_constant(previous["constant"])
    if session._keeper is not None:
        session._keeper.set()


class EarlyStart:
    """A local Ray started (`start(None, ...)`) in a thread of its own while the driver goes on checking its inputs:
    Ray's start is seconds spent mostly waiting for its processes, the checks are seconds of one core importing TRL,
    so the two overlap on a machine with two cores or more. The driver either takes the session (`take`, once every
    check passed) or closes it (`close`: stopped, its folder removed). The thread lives until the session is
    stopped: Ray starts its processes with PR_SET_PDEATHSIG, so they die with the thread that started them."""

    def __init__(self, dashboard_host: str, verbose: bool = False):
        _sigterm_as_ctrl_c()  # here: the thread's ray.init sets no SIGTERM handler, not being the main thread
        self.dashboard_host = dashboard_host
        self._session: RaySession | None = None
        self._error: BaseException | None = None
        self._taken = False
        self._started = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(dashboard_host, verbose), name="tuner-ray-start",
                                        daemon=True)
        self._thread.start()

    def _run(self, dashboard_host: str, verbose: bool) -> None:
        try:
            self._session = start(None, dashboard_host, verbose)
            self._session._keeper = self._release
        except BaseException as error:  # handed to the driver by take()
            self._error = error
        finally:
            self._started.set()
        self._release.wait()

    def take(self) -> RaySession:
        """The started session, once Ray is up (what `start` raised, if it failed); stop it with `stop`."""
        self._started.wait()
        if self._error is not None:
            self._release.set()
            raise self._error
        self._taken = True
        assert self._session is not None
        return self._session

    def close(self) -> None:
        """Stop the Ray unless `take` handed it over: waits for its start to end first (it cannot be cut short)."""
        if self._taken:
            return
        with _ctrl_c_ignored():  # a second Ctrl-C must not leave this Ray, or its folder, behind
            self._started.wait()
            if self._session is not None:
                stop(self._session)
            self._release.set()
            self._thread.join()


def _no_failure_handler_for_sigterm() -> None:
    """Before ray.init: the driver's Ray core worker would otherwise install a C++ failure handler that takes SIGTERM
    from Python (a stack dump and an abort: no `finally` block runs, the buffered output is lost). Set for this
    process only (a constant it reads when it connects); Ray's other processes keep theirs, and its stack dumps of
    real crashes."""
    sys.modules["ray._private.ray_constants"].RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM (kill, timeout, a scheduler's preemption) ends the driver as Ctrl-C does: Tune saves the search's
    state and stops it, the driver prints the resume command, and each `finally` stops Ray and removes its folder.
    ray.init's own handler (set in the main thread) would exit from wherever the driver was waiting on Ray."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _ctrl_c_on_sigterm)


def _ctrl_c_on_sigterm(signum, frame):
    signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def _ctrl_c_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def local_resources() -> dict[str, float]:
    """What a local Ray will find on this machine, in Ray's resource names."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}


def cluster_resources() -> dict[str, float]:
    """The resources of the Ray cluster this driver is attached to (after `start`)."""
    import ray

    return ray.cluster_resources()


def check_resources(cpu: float, gpu: float, available: dict[str, float], where: str) -> None:
    """A trial that asks for more than the whole cluster never starts: Tune would wait forever, repeating a warning.
    Raises InputError naming what to lower."""
    problems = []
    cpus, gpus = float(available.get("CPU", 0)), float(available.get("GPU", 0))
    if cpu > cpus:
        problems.append(f"resources.cpu: each trial needs {cpu:g} CPU(s), but {where} has {cpus:g}; lower "
                        f"resources.cpu, got {cpu:g}")
    if gpu > gpus:
        has = f"{gpus:g} GPU(s)" if gpus else "no GPU"
        problems.append(f"resources.gpu: each trial needs {gpu:g} GPU, but {where} has {has}; set resources.gpu: 0 "
                        f"to train on CPUs, or run on a machine with a GPU, got {gpu:g}")
    if problems:
        raise InputError("\n".join(problems))  # one line per problem


def _single_machine_mode() -> dict[str, Any]:
    """Set Ray's single-machine mode for the Ray this process starts; returns what to restore afterwards."""
    restore: dict[str, Any] = {SINGLE_MACHINE_VARIABLE: os.environ.get(SINGLE_MACHINE_VARIABLE)}
    os.environ[SINGLE_MACHINE_VARIABLE] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # Ray was imported before and has read the variable already
        restore["constant"] = constants.ENABLE_RAY_CLUSTER
        _set_constant(False)
    return restore


def _set_constant(value: bool) -> None:
    sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = value
