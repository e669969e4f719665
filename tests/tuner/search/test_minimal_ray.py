"""tuner's local Ray on a minimal Ray install (no dashboard packages), as on the GPU device's carried site."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

# opencensus is one of the packages Ray's dashboard needs (ray/dashboard/optional_deps.py) and ray[default] brings:
# made unimportable, Ray sees a minimal install.
START_WITHOUT_DASHBOARD_PACKAGES = """
import sys
sys.modules["opencensus"] = None
from tuner.search import cluster
session = cluster.start(None)
print("started, dashboard:", repr(session.context.dashboard_url))
cluster.stop(session)
"""


def test_local_ray_starts_without_the_dashboard_packages():
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", START_WITHOUT_DASHBOARD_PACKAGES], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "started, dashboard: ''" in done.stdout
