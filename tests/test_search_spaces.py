"""Every shipped YAML loads and validates, and its header gives the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.search.space import planned_trials
from tuner.spec import load_spec
from tuner.run import main

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))


def test_there_are_shipped_specs():
    assert {p.name for p in SHIPPED} >= {"dpo.yaml", "orpo.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spec_validates(path):
    spec = load_spec(path)
    assert spec.search.space, "a shipped spec searches something"
    assert f"python -m tuner.run search_spaces/{path.name}" in path.read_text()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_dry_run_prints_the_resolved_spec_and_space(path, capsys):
    assert main([str(path), "--dry-run", "search.num_samples=3"]) == 0
    out = capsys.readouterr().out
    spec = load_spec(path, ["search.num_samples=3"])
    planned = planned_trials(spec)
    # a grid lists its trials: each cell once per sample, the repeats on the next training seeds
    shown = (f"search: {spec.search.algorithm}, 3 samples" if planned is None else
             f"search: grid of {len(planned) // 3} settings, {len(planned)} trial(s)")
    assert "num_samples: 3" in out and shown in out
    assert planned is None or "each setting runs 3 times, on training seeds" in out
