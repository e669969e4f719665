"""A search whose results live in object storage (moto's S3 server), on a two-node Ray cluster whose worker node
cannot see the driver's disk: the head has no CPUs, so every trial runs on the worker, which runs in its own mount
namespace with the driver's folder (its working directory, TMPDIR and tuner's working copy) covered by an empty
read-only filesystem, and with its own working directory and TMPDIR. Then the driver is SIGKILLed after a trial has
finished, its working copy is deleted, and `--resume`, `python -m analysis` and `tuner.export` work from the URI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from tests.conftest import spec_path
from tests.tuner.search.test_cluster_integration import RAY, free_port, stop_cluster
from tests.tuner.search.test_search_integration import FAST
from tuner.experiment.folder import Experiment

pytestmark = pytest.mark.integration
SAMPLES = 3


def can_hide_folders() -> bool:
    """Whether this machine lets a process tree get its own mount namespace (root, or user namespaces)."""
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                               f"mount -t tmpfs -o ro tmpfs {folder}"], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """(address, driver folder, worker node id): a head with no CPUs and a worker node that cannot see the driver
    folder (when the machine allows mount namespaces)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    driver, worker = tmp_path / "driver", tmp_path / "worker"
    (driver / "tmp").mkdir(parents=True)
    (worker / "tmp").mkdir(parents=True)
    port = free_port()
    head_temp = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    worker_temp = tempfile.mkdtemp(prefix="rayw", dir="/tmp")
    head = [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=0",
            "--include-dashboard=false", f"--temp-dir={head_temp}", "--disable-usage-stats"]
    start_worker = [RAY, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                    f"--temp-dir={worker_temp}", "--disable-usage-stats"]
    if can_hide_folders():
        # The node's processes (raylet, trial workers) inherit the namespace: the driver folder is empty there.
        start_worker = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                        'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(driver), *start_worker]
    else:
        warnings.warn("no mount namespaces here: the worker node runs without the driver's folder hidden")
    worker_env = {**os.environ, "TMPDIR": str(worker / "tmp"), "TUNER_CACHE": str(worker / "cache")}
    try:
        subprocess.run(head, check=True, capture_output=True, timeout=120)
        subprocess.run(start_worker, check=True, env=worker_env, cwd=worker, capture_output=True, timeout=120)
        address = f"127.0.0.1:{port}"
        # In a subprocess: Ray reads RAY_AUTH_MODE once per process, and this one may have imported Ray already.
        listing = subprocess.run([sys.executable, "-c", "import json, ray; ray.init(address=" + repr(address) +
                                  "); print(json.dumps({n['NodeID']: n['Resources'].get('CPU', 0) for n in "
                                  "ray.nodes() if n['Alive']}))"], capture_output=True, text=True, timeout=300)
        assert listing.returncode == 0, listing.stderr[-3000:]
        cpus = json.loads(listing.stdout.strip().splitlines()[-1])
        (worker_id,) = [node for node, count in cpus.items() if count == 2]
        yield address, driver, worker_id
    finally:
        stop_cluster(worker_temp, port)
        stop_cluster(head_temp, port)


def driver_command(cwd: Path, *args: str, cache: str = "cache") -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(cwd / "tmp"), "TUNER_CACHE": str(cwd / cache), "RAY_DEDUP_LOGS": "0"}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finished_in_stored_study(s3_server, bucket: str, key: str, scratch: Path) -> int:
    """COMPLETE trials in the study as uploaded to the bucket (0 before its first upload)."""
    if key not in s3_server.keys(bucket, key):
        return 0
    scratch.write_bytes(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    with sqlite3.connect(scratch) as db:
        return db.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]


def test_search_in_object_storage_with_a_worker_that_cannot_see_the_driver(cluster, s3_server, tiny_llama,
                                                                          tmp_path, monkeypatch):
    address, driver, worker_id = cluster
    bucket = s3_server.bucket("search")
    uri = s3_server.uri(bucket, "results/s3it")
    study_key = "results/s3it/tuner/optuna.db"
    search = driver_command(driver, "-m", "tuner.run", str(spec_path("dpo.yaml")), f"model.name={tiny_llama}",
                            f"run.storage_path={s3_server.uri(bucket, 'results')}", "--name", "s3it",
                            "--address", address, *FAST, f"search.num_samples={SAMPLES}", "scheduler.type=none")
    deadline = time.monotonic() + 600
    while finished_in_stored_study(s3_server, bucket, study_key, tmp_path / "poll.db") < 1:
        assert search.poll() is None, search.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no trial finished in 10 minutes"
        time.sleep(0.5)
    os.killpg(search.pid, signal.SIGKILL)  # the driver and anything it started, as a lost machine would
    assert search.wait(timeout=60) == -signal.SIGKILL
    first_output = search.stdout.read()
    assert "must be a folder that every node mounts" not in first_output  # object storage needs no NFS

    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "reader"))
    stopped = Experiment.open(uri)
    assert (stopped.trials["status"] == "finished").sum() < SAMPLES, "the search ended before it was killed"
    shutil.rmtree(driver / "cache")  # the driver's working copy is lost too: resume must find it all in storage

    resumed = driver_command(driver, "-m", "tuner.run", "--resume", uri, "--address", address, cache="cache2")
    output = resumed.communicate(timeout=900)[0]
    assert resumed.returncode == 0, output[-4000:]
    assert f"resuming {uri}" in output
    experiment = Experiment.open(uri)
    assert len(experiment.trials) == SAMPLES and set(experiment.trials["status"]) == {"finished"}
    assert set(experiment.history["node_id"]) == {worker_id}  # the head has no CPUs: every trial ran there
    assert finished_in_stored_study(s3_server, bucket, study_key, tmp_path / "final.db") == SAMPLES
    assert not any(key.startswith("results/s3it/tuner/cache") for key in s3_server.keys(bucket))

    report = driver_command(tmp_path, "-m", "analysis", uri, "--out", str(tmp_path / "report"), cache="analysis")
    output = report.communicate(timeout=300)[0]
    assert report.returncode == 0, output[-3000:]
    assert "all: by eval_pref_accuracy (max, best)" in output
    assert {"report.md", "report.html", "ranking_dpo.csv"} <= {p.name for p in (tmp_path / "report").iterdir()}
    assert uri in (tmp_path / "report" / "report.md").read_text()

    export = driver_command(tmp_path, "-m", "tuner.export", uri, "--out", str(tmp_path / "adapter"), cache="export")
    output = export.communicate(timeout=300)[0]
    assert export.returncode == 0, output[-3000:]
    trial = json.loads((tmp_path / "adapter" / "trial.json").read_text())
    best = experiment.best()
    assert trial["trial_id"] == best.trial_id and trial["checkpoint"] == best.checkpoint
    checkpoint_key = f"results/s3it/{experiment.location.relative(best.checkpoint)}/adapter_model.safetensors"
    stored = s3_server.client().get_object(Bucket=bucket, Key=checkpoint_key)["Body"].read()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes() == stored
