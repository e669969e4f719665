"""The Ray a search runs on: a local one of its own (never the cluster /tmp/ray/ray_current_cluster names), listening
on loopback only, in a private temp folder removed at the end; a dashboard widened beyond loopback with Ray's token
authentication off is refused; the W&B key stays out of the logging actor's runtime env."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from tests.conftest import REPO, spec_path
from tuner.search import cluster
from tuner.errors import InputError

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

# Starts tuner's local Ray, a W&B logging actor the way Tune does (offline; the key set in the environment) and one
# task, then prints what the test inspects and waits for a line on stdin before stopping the Ray it started.
SESSION = """
import json, os, sys
from pathlib import Path
import ray
from ray.util.state import list_actors
from tuner.search import build
from tuner.search import cluster
from tuner.experiment.folder import Experiment
from tuner.spec import validate_spec

session = cluster.start(None)
spec = validate_spec({"run": {"wandb": "offline"}})
experiment = Experiment(Path(sys.argv[1]))
experiment.path.mkdir(mode=0o700)
callback = build.logger_callbacks(spec, experiment)[0]
callback.setup()
class Trial:
    local_path = str(experiment.path)
    trial_id = "t1"
callback._start_logging_actor(Trial(), [], name="t1", mode="offline", dir=str(experiment.path / "wandb"))
key_in_task = ray.get(ray.remote(lambda: os.environ.get("WANDB_API_KEY")).remote())
dashboard = "http://" + session.context.dashboard_url  # this Ray's (others run on the machine)
actors = [a for a in list_actors(address=dashboard, detail=True) if "WandbLoggingActor" in a.class_name]
print(json.dumps({"private_dir": str(session.private_dir), "node_ip": session.context.address_info["node_ip_address"],
                  "dashboard": session.context.dashboard_url, "key_in_task": key_in_task,
                  "runtime_envs": [a.serialized_runtime_env for a in actors]}), flush=True)
sys.stdin.readline()
cluster.stop(session)
print("stopped", flush=True)
"""


def listening_sockets(root_pid: int) -> list[tuple[int, str, str, int]]:
    """(pid, name, ip, port) of every listening TCP socket of `root_pid` and its descendants."""
    found = []
    root = psutil.Process(root_pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    found.append((process.pid, process.name(), connection.laddr.ip, connection.laddr.port))
        except psutil.NoSuchProcess:
            pass
    return found


def test_a_local_ray_listens_on_loopback_only_in_a_private_folder_and_keeps_the_wandb_key_out_of_runtime_envs(
        tmp_path):
    env = {**os.environ, "WANDB_API_KEY": "tuner-test-wandb-key", "WANDB_MODE": "offline"}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-c", SESSION, str(tmp_path / "exp")], cwd=REPO, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        line = driver.stdout.readline()
        while line and not line.startswith("{"):  # a library's own line (a warning under load) comes first
            line = driver.stdout.readline()
        assert line, driver.stderr.read()[-4000:]
        seen = json.loads(line)
        time.sleep(5)  # agents finish binding their ports
        sockets = listening_sockets(driver.pid)
        private = Path(seen["private_dir"])
        assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.stat().st_uid == os.getuid()
        assert any((private / "ray").glob("session_*"))  # Ray's sessions, logs and sockets live under it
        driver.stdin.write("stop\n")
        driver.stdin.flush()
        assert driver.stdout.readline().strip() == "stopped"
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, 9)
            driver.wait()
    assert seen["node_ip"] == "127.0.0.1" and seen["dashboard"].startswith("127.0.0.1:")
    names = {name for _, name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the inspection saw Ray's own servers
    assert [s for s in sockets if s[2] not in LOOPBACK] == [], sockets
    assert not private.exists()
    # The key reaches the workers through the environment they inherit, never through a runtime env that Ray's
    # state API shows to anyone holding the cluster's token.
    assert seen["key_in_task"] == "tuner-test-wandb-key"
    assert seen["runtime_envs"] and not any("tuner-test-wandb-key" in (r or "") for r in seen["runtime_envs"])


def test_local_ray_is_started_never_attached_to_and_an_address_is_attached_to(monkeypatch):
    import ray

    calls = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs) or "context")
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    session = cluster.start(None, "127.0.0.1")
    try:
        assert calls[0]["address"] == "local"  # a bare ray.init() would attach to /tmp/ray/ray_current_cluster
        assert calls[0]["_temp_dir"] == str(session.private_dir / "ray") and calls[0]["dashboard_host"] == "127.0.0.1"
        assert os.environ[cluster.SINGLE_MACHINE_VARIABLE] == "0"
    finally:
        cluster.stop(session)
    assert not session.private_dir.exists() and cluster.SINGLE_MACHINE_VARIABLE not in os.environ
    cluster.start("10.0.0.5:6379")  # quiet: Ray's lines and the workers' output stay out of the driver
    assert calls[1] == {"address": "10.0.0.5:6379", "log_to_driver": False, "logging_level": logging.ERROR}
    cluster.start("10.0.0.5:6379", verbose=True)
    assert calls[2] == {"address": "10.0.0.5:6379", "log_to_driver": True, "logging_level": logging.INFO}


@pytest.mark.parametrize(("address", "host", "auth", "refused"), [
    (None, "0.0.0.0", "disabled", True),
    (None, "192.168.1.10", "DISABLED", True),
    (None, "127.0.0.1", "disabled", False),
    (None, "::1", "disabled", False),
    (None, "0.0.0.0", "token", False),  # widened with token auth: allowed, with a warning
    (None, "0.0.0.0", None, False),  # Ray 2.60's default is token auth
    ("10.0.0.5:6379", "0.0.0.0", "disabled", False),  # the cluster's dashboard is not ours to bind
])
def test_a_widened_dashboard_without_token_auth_is_refused(address, host, auth, refused):
    environ = {} if auth is None else {"RAY_AUTH_MODE": auth}
    if not refused:
        cluster.check_exposure(address, host, environ)
        return
    with pytest.raises(InputError, match=f"run.dashboard_host: with RAY_AUTH_MODE=disabled, a dashboard on {host} "
                                         f"lets anyone who can reach this machine run code on it as you"):
        cluster.check_exposure(address, host, environ)


def test_the_cli_refuses_it_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from tuner.run import main

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code = main([str(spec_path("dpo.yaml")), "run.dashboard_host=0.0.0.0", f"run.storage_path={tmp_path / 'r'}",
                 "data.source=/nonexistent/pairs.jsonl"])  # refused first, before the data is even read
    err = capsys.readouterr().err
    assert code == 2 and "run.dashboard_host: with RAY_AUTH_MODE=disabled" in err and "data.source" not in err
    assert not (tmp_path / "r").exists()


@pytest.fixture(autouse=True)
def sigterm_kept():
    """cluster.start and EarlyStart set the process's SIGTERM handler (SIGTERM as Ctrl-C): pytest's is kept."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def slow_start(calls: list, error: Exception | None = None):
    """cluster.start without Ray: it takes a moment, records the thread it ran in, and fails with `error`."""
    def start(address, dashboard_host="127.0.0.1", verbose=False):
        time.sleep(0.2)
        calls.append(threading.current_thread())
        if error is not None:
            raise error
        return cluster.RaySession(SimpleNamespace(dashboard_url=None))
    return start


def test_an_early_start_runs_in_its_own_thread_which_lives_until_the_session_is_stopped(monkeypatch):
    # Ray starts its processes with PR_SET_PDEATHSIG: they die when the thread that started them ends, so the
    # thread must outlive the session it handed over.
    calls: list = []
    monkeypatch.setattr(cluster, "start", slow_start(calls))
    early = cluster.EarlyStart("127.0.0.1")
    session = early.take()  # waits for the start
    assert calls == [early._thread] and calls[0] is not threading.main_thread()
    time.sleep(0.1)
    assert early._thread.is_alive()
    early.close()  # taken: the driver's cluster.stop owns it now
    assert early._thread.is_alive()
    cluster.stop(session)
    early._thread.join(timeout=5)
    assert not early._thread.is_alive()


def test_an_early_start_that_is_not_taken_is_stopped_once_it_has_started(monkeypatch):
    calls: list = []
    stopped: list = []
    real_stop = cluster.stop
    monkeypatch.setattr(cluster, "start", slow_start(calls))
    monkeypatch.setattr(cluster, "stop", lambda session: (stopped.append(session), real_stop(session)))
    early = cluster.EarlyStart("127.0.0.1")
    early.close()  # at once: a check failed while Ray was still starting
    assert len(calls) == 1 and stopped == [early._session] and not early._thread.is_alive()


def test_an_early_start_that_failed_raises_its_error_when_taken(monkeypatch):
    monkeypatch.setattr(cluster, "start", slow_start([], RuntimeError("Failed to start the GCS")))
    early = cluster.EarlyStart("127.0.0.1")
    with pytest.raises(RuntimeError, match="Failed to start the GCS"):
        early.take()
    early.close()
    early._thread.join(timeout=5)
    assert not early._thread.is_alive()
