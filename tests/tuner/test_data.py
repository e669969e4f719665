from __future__ import annotations

import json

import pytest
from datasets import Dataset

from tuner.data import BUNDLED_PATH, DataError, as_conversation, load_pairs, split_by_prompt
from tuner.spec import DataSpec


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bundled_split_shares_no_prompt_and_is_deterministic():
    train, held_out = load_pairs(DataSpec())
    assert len(train) + len(held_out) == sum(1 for _ in BUNDLED_PATH.open()) >= 600
    assert len(set(held_out["prompt"])) == 24
    assert not set(train["prompt"]) & set(held_out["prompt"])
    again_train, _ = load_pairs(DataSpec())
    assert train["prompt"] == again_train["prompt"]


def test_column_mapping_and_unusable_rows(tmp_path):
    rows = [{"q": f"p{i}", "good": "yes", "bad": "no"} for i in range(6)] + [{"q": "p9", "good": "same", "bad": "same"}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    spec = DataSpec(source=str(path), columns={"prompt": "q", "chosen": "good", "rejected": "bad"}, eval_fraction=0.5)
    train, held_out = load_pairs(spec)
    assert train.column_names == ["prompt", "chosen", "rejected"]
    assert len(train) + len(held_out) == 6  # the chosen == rejected row is dropped


def test_missing_columns_are_named(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "answer": "b"}])
    with pytest.raises(DataError, match=r"no column chosen='chosen', rejected='rejected'; its columns are"):
        load_pairs(DataSpec(source=str(path)))


def test_missing_file_and_eval_source(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_pairs(DataSpec(source=str(tmp_path / "nope.jsonl")))
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(4)]
    train_path = write_jsonl(tmp_path / "train.jsonl", rows)
    eval_path = write_jsonl(tmp_path / "eval.csv", [])
    eval_path.write_text("prompt,chosen,rejected\nq,a,b\n")
    train, held_out = load_pairs(DataSpec(source=str(train_path), eval_source=str(eval_path), max_rows=3))
    assert len(train) == 3 and held_out["prompt"] == ["q"]


def test_split_keeps_every_pair_of_a_prompt_together():
    dataset = Dataset.from_list([{"prompt": f"p{i // 3}", "chosen": "a", "rejected": f"b{i}"} for i in range(30)])
    train, held_out = split_by_prompt(dataset, 0.3, seed=1)
    assert len(held_out) == 9 and len(train) == 21
    assert not set(train["prompt"]) & set(held_out["prompt"])
    with pytest.raises(DataError, match="at least 2 distinct prompts"):
        split_by_prompt(dataset.filter(lambda r: r["prompt"] == "p0"), 0.3, seed=1)


def test_as_conversation_wraps_turns():
    dataset = as_conversation(Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"}]))
    assert dataset[0]["prompt"] == [{"role": "user", "content": "q"}]
    assert dataset[0]["chosen"] == [{"role": "assistant", "content": "a"}]
    assert as_conversation(dataset)[0] == dataset[0]
