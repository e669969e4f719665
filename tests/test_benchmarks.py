"""The benchmarks' CPU dry runs: they must keep working on a machine without a GPU (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_gpu_packing_dry_run_prints_the_table(tmp_path, embedded_model):
    out = tmp_path / "packing.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_packing", "--dry-run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "trials/GPU" in done.stdout and "ratio to 1" in done.stdout
    results = json.loads(out.read_text())
    assert set(results) == {"1", "2"}
    for row in results.values():
        assert row["trial_steps_per_s"] > 0 and row["wall_s"] > 0
