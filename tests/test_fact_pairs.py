"""The fact benchmark's pairs ask what the bundled data never asks, and differ only in the fact."""

from __future__ import annotations

import json

from benchmarks.fact_pairs import FACTS, main, pairs
from tuner.data.loading import BUNDLED_PATH


def test_fact_pairs_are_about_questions_outside_the_bundled_data():
    bundled = {json.loads(line)["prompt"].lower() for line in BUNDLED_PATH.open()}
    rows = pairs()
    assert len(rows) == len(FACTS) >= 40
    assert not {r["prompt"].lower() for r in rows} & bundled
    assert len({r["prompt"] for r in rows}) == len(rows) and len({r["pair_id"] for r in rows}) == len(rows)
    for row in rows:
        chosen, rejected = row["chosen"].split(), row["rejected"].split()
        assert len(chosen) == len(rejected) and row["chosen"] != row["rejected"], row
        assert sum(a != b for a, b in zip(chosen, rejected)) <= 3, row


def test_fact_pairs_write_a_test_source_file(tmp_path):
    out = tmp_path / "facts.jsonl"
    assert main(["--write", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == pairs() and {"prompt", "chosen", "rejected", "kind", "pair_id"} <= set(rows[0])
