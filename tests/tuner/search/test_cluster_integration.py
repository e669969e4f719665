"""A real two-node Ray cluster on this machine (`ray start --head` plus `ray start --address`), started and
stopped by the test: `--address` attaches to it and trials run on both nodes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from tuner.experiment.folder import Experiment
from tests.conftest import REPO, spec_path
from tests.tuner.search.test_search_integration import FAST

pytestmark = pytest.mark.integration
RAY = shutil.which("ray") or "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_node_cluster(monkeypatch):
    yield from started_cluster(monkeypatch, head_cpus=1)


@pytest.fixture
def cluster_with_a_bare_head(monkeypatch):
    """The driver's node (the head) has no CPU for a trial or a pass: all model work must go to the worker."""
    yield from started_cluster(monkeypatch, head_cpus=0)


def started_cluster(monkeypatch, head_cpus: int):
    # `ray start` clusters check Ray's auth token (~/.ray/auth_token): every node and driver runs in token mode.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    port = free_port()
    env = dict(os.environ)
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    head = [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={head_cpus}",
            "--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    worker = [RAY, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
              "--disable-usage-stats"]
    try:
        subprocess.run(head, check=True, env=env, capture_output=True, timeout=120)
        subprocess.run(worker, check=True, env=env, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        stop_cluster(temp_dir, port)


def stop_cluster(temp_dir: str, port: int) -> None:
    """Kill this cluster's processes only: `ray stop` would also end any other Ray on the machine."""
    import psutil

    ours = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if temp_dir in command or f"127.0.0.1:{port}" in command:
            ours.append(process)
    for process in ours:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(ours, timeout=30)
    shutil.rmtree(temp_dir, ignore_errors=True)


def alive_nodes(address: str) -> dict[str, float]:
    """Node id -> CPUs of each live node of the cluster at `address`."""
    # In a subprocess: Ray reads RAY_AUTH_MODE once per process, and this one may have imported Ray already.
    listing = subprocess.run([sys.executable, "-c", "import json, ray; ray.init(address=" + repr(address) +
                              "); print(json.dumps({n['NodeID']: n['Resources'].get('CPU', 0) for n in ray.nodes() "
                              "if n['Alive']}))"], capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr[-3000:]
    return json.loads(listing.stdout.strip().splitlines()[-1])


def test_trials_run_on_both_nodes_of_a_cluster(two_node_cluster, tiny_llama, tmp_path):
    node_ids = set(alive_nodes(two_node_cluster))
    assert len(node_ids) == 2
    command = [sys.executable, "-m", "tuner.run", str(spec_path("dpo.yaml")), f"model.name={tiny_llama}",
               f"run.storage_path={tmp_path / 'shared'}", "--name", "cluster", "--address", two_node_cluster, *FAST,
               "search.num_samples=2", "scheduler.type=none"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "must be a folder that every node mounts" in done.stderr
    experiment = Experiment.open(tmp_path / "shared" / "cluster")
    assert set(experiment.trials["status"]) == {"finished"}
    assert set(experiment.history["node_id"]) == node_ids


def test_model_passes_run_where_the_trials_run(cluster_with_a_bare_head, tiny_llama, tmp_path):
    """The driver attaches to a head node with no CPU: the reference pass, the base model's scores and the test
    scoring run as Ray tasks on the worker, as the trials do (tuner.passes.tasks records each task's node)."""
    from tuner.passes import tasks as model_passes

    nodes = alive_nodes(cluster_with_a_bare_head)
    [worker] = [node for node, cpus in nodes.items() if cpus > 0]
    command = [sys.executable, "-m", "tuner.run", str(spec_path("dpo.yaml")), f"model.name={tiny_llama}",
               f"run.storage_path={tmp_path / 'shared'}", "--name", "passes", "--address", cluster_with_a_bare_head,
               *FAST, "search.num_samples=2", "scheduler.type=none", "search.test_top_k=2"]
    env = {**os.environ, "TUNER_CACHE": str(tmp_path / "cache")}  # a first search: nothing to reuse
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    experiment = Experiment.open(tmp_path / "shared" / "passes")
    assert set(experiment.history["node_id"]) == {worker}
    passes = model_passes.recorded(experiment)
    [reference] = passes["prepare"]
    assert reference["pass"] == "reference" and not reference["reused"] and reference["node_id"] == worker
    # in the shadow of the trials (tuner.passes.shadow), and at the end for what was left: the base model and both
    # trials, once each, all on the worker
    tested = passes.get("shadow", []) + passes.get("test", [])
    assert sorted(p["pass"] for p in tested)[0] == "base model (test)" and len(tested) == 3
    assert {p["node_id"] for p in tested} == {worker} and not any(p["reused"] for p in tested)
    assert experiment.test_scores_file.is_file()
