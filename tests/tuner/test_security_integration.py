"""A real search, watched from outside while it runs: every socket its Ray listens on is bound to loopback, its Ray
lives in a private folder removed at the end, and nothing it leaves (results, W&B offline run, datasets cache) is
readable or writable by other users (`find -perm /077`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, spec_path
from tests.tuner.search.test_cluster import LOOPBACK, listening_sockets
from tests.tuner.search.test_search_integration import FAST

pytestmark = pytest.mark.integration


def readable_by_others(folder: Path) -> list[str]:
    # Symbolic links (W&B's latest-run) always show mode 0777; what they point to is checked on its own.
    done = subprocess.run(["find", str(folder), "!", "-type", "l", "-perm", "/077"], capture_output=True, text=True,
                          check=True)
    return done.stdout.split()


def private_ray_dirs(root_pid: int) -> set[str]:
    """The private folder (/tmp/tuner-UID-PID-*) the run's Ray processes were started in."""
    found = set()
    root = psutil.Process(root_pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            for part in process.cmdline():
                if "/tmp/tuner-" in part:
                    found.add("/tmp/tuner-" + part.split("/tmp/tuner-", 1)[1].split("/", 1)[0])
        except psutil.NoSuchProcess:
            pass
    return found


def test_a_run_listens_on_loopback_only_and_leaves_nothing_readable_by_others(tiny_llama, tmp_path):
    storage, datasets_cache = tmp_path / "results", tmp_path / "hf-datasets"
    env = {**os.environ, "HF_DATASETS_CACHE": str(datasets_cache), "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("WANDB_API_KEY", None)
    command = [sys.executable, "-m", "tuner.run", str(spec_path("dpo.yaml")), f"model.name={tiny_llama}",
               f"run.storage_path={storage}", "--name", "private", *FAST, "search.num_samples=1",
               "scheduler.type=none", "run.wandb=offline"]
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    sockets, private = set(), set()
    try:
        deadline = time.time() + 900
        while driver.poll() is None and time.time() < deadline:
            try:
                sockets |= set(listening_sockets(driver.pid))
                private |= private_ray_dirs(driver.pid)
            except psutil.NoSuchProcess:
                pass
            time.sleep(2)
        out, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, 9)
            driver.wait()
    assert driver.returncode == 0, out[-4000:]
    names = {name for _, name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names and any("run_trial" in n or "ray::" in n for n in names), sockets
    assert [s for s in sockets if s[2] not in LOOPBACK] == [], sockets
    assert len(private) == 1 and not Path(next(iter(private))).exists()  # one private Ray folder, removed
    experiment = storage / "private"
    assert list(experiment.glob("run_trial_*/checkpoint_*/adapter_model.safetensors"))
    assert list((experiment / "wandb").glob("wandb/offline-run-*"))
    assert (experiment / "tuner" / "data" / "train").is_dir()
    assert readable_by_others(storage) == []
    assert not datasets_cache.exists() or readable_by_others(datasets_cache) == []
