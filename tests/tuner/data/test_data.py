from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from datasets import Dataset

from tuner.data.loading import BUNDLED_PATH, DataError, as_conversation, load_pairs, split_by_prompt
from tuner.spec import DataSpec


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bundled_split_is_three_way_by_prompt_and_deterministic():
    splits = load_pairs(DataSpec())
    train, held_out, test = splits.train, splits.eval, splits.test
    assert len(train) + len(held_out) + len(test) == sum(1 for _ in BUNDLED_PATH.open()) >= 720
    assert len(set(held_out["prompt"])) == 24 and len(set(test["prompt"])) == 24
    assert len(test) >= 100  # enough pairs that one pair is under a point
    prompts = [set(split["prompt"]) for split in (train, held_out, test)]
    assert not prompts[0] & prompts[1] and not prompts[0] & prompts[2] and not prompts[1] & prompts[2]
    again = load_pairs(DataSpec())
    assert list(train["pair_id"]) == list(again.train["pair_id"]) and list(test["pair_id"]) == list(again.test["pair_id"])
    ids = list(train["pair_id"]) + list(held_out["pair_id"]) + list(test["pair_id"])
    assert len(set(ids)) == len(ids)
    # the bundled data is grouped by kind, every kind in the test split, the style-matched one included
    assert set(test["group"]) == {"wrong_fact", "repetition", "evasive", "rambling", "hedged", "style_matched"}
    # adding the test split left the eval prompts where the two-way split put them
    assert set(held_out["prompt"]) == set(load_pairs(DataSpec(test_fraction=0)).eval["prompt"])
    assert load_pairs(DataSpec(test_fraction=0)).test is None


def test_style_matched_pairs_differ_only_in_the_fact():
    rows = [json.loads(line) for line in BUNDLED_PATH.open()]
    matched = [r for r in rows if r["kind"] == "style_matched"]
    assert len(matched) == len({r["prompt"] for r in rows}) == 120
    for row in matched:
        chosen, rejected = row["chosen"].split(), row["rejected"].split()
        assert len(chosen) == len(rejected), row
        assert sum(a != b for a, b in zip(chosen, rejected)) <= 5, row  # the fact's words, nothing else
    wrong_fact = {r["prompt"]: r for r in rows if r["kind"] == "wrong_fact"}
    assert all((r["chosen"], r["rejected"]) != (wrong_fact[r["prompt"]]["chosen"], wrong_fact[r["prompt"]]["rejected"])
               for r in matched)  # a new pair, not a copy of the wrong-fact one


def test_column_mapping_and_unusable_rows(tmp_path):
    rows = [{"q": f"p{i}", "good": "yes", "bad": "no", "topic": i % 2} for i in range(6)] + \
        [{"q": "p9", "good": "same", "bad": "same", "topic": 0}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    spec = DataSpec(source=str(path), columns={"prompt": "q", "chosen": "good", "rejected": "bad"}, eval_fraction=0.5,
                    group_column="topic", drop_bad_rows=True)
    splits = load_pairs(spec)
    assert splits.train.column_names == ["prompt", "chosen", "rejected", "group", "pair_id"]
    # the chosen == rejected row is dropped, and said so
    assert len(splits.train) + len(splits.eval) + len(splits.test) == 6
    assert splits.notes == [f"data: dropped 1 bad row(s) of 7 (chosen == rejected: 1) of data.source {str(path)!r} "
                            f"(data.drop_bad_rows)"]
    assert {*splits.train["group"], *splits.eval["group"], *splits.test["group"]} == {"0", "1"}
    # ids without a pair_id column: a hash of the pair's text, the same on every load
    assert list(splits.train["pair_id"]) == list(load_pairs(spec).train["pair_id"])
    assert all(len(i) == 12 for i in splits.train["pair_id"])


def test_group_column_and_pair_ids_are_checked(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b", "pair_id": "x"} for i in range(4)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError, match="data.group_column: .* has no column 'topic'"):
        load_pairs(DataSpec(source=str(path), group_column="topic"))
    with pytest.raises(DataError, match="pair_id column whose ids repeat"):
        load_pairs(DataSpec(source=str(path)))


def test_eval_and_test_fractions_must_leave_training_prompts():
    from tuner.spec import SpecError, validate_spec

    with pytest.raises(SpecError, match="data: eval_fraction \\+ test_fraction must leave prompts for training"):
        validate_spec({"data": {"eval_fraction": 0.5, "test_fraction": 0.5}})
    validate_spec({"data": {"eval_fraction": 0.5, "test_fraction": 0.5, "test_source": "t.jsonl"}})


def test_test_source_prompts_leave_train_and_eval(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": f"b{i}"} for i in range(10)]
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", [rows[0], rows[5], {"prompt": "new", "chosen": "a", "rejected": "b"}])
    splits = load_pairs(DataSpec(source=str(source), test_source=str(test)))
    assert set(splits.test["prompt"]) == {"p0", "p5", "new"}
    assert not {"p0", "p5"} & {*splits.train["prompt"], *splits.eval["prompt"]}
    assert len(splits.train) + len(splits.eval) == 8
    assert any("dropped: their prompts are in data.test_source" in note for note in splits.notes)
    assert len(load_pairs(DataSpec(source=str(source), test_source=str(test), max_test_rows=2)).test) == 2


def test_missing_columns_are_named(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "answer": "b"}])
    with pytest.raises(DataError, match=r"no column chosen='chosen', rejected='rejected'; its columns are"):
        load_pairs(DataSpec(source=str(path)))


def test_missing_file_and_eval_source(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_pairs(DataSpec(source=str(tmp_path / "nope.jsonl")))
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(5)]
    train_path = write_jsonl(tmp_path / "train.jsonl", rows)
    eval_path = write_jsonl(tmp_path / "eval.csv", [])
    eval_path.write_text("prompt,chosen,rejected\nq,a,b\n")
    splits = load_pairs(DataSpec(source=str(train_path), eval_source=str(eval_path), max_rows=3))
    assert len(splits.train) == 3 and splits.eval["prompt"] == ["q"] and len(splits.test) == 1


def test_split_keeps_every_pair_of_a_prompt_together():
    dataset = Dataset.from_list([{"prompt": f"p{i // 3}", "chosen": "a", "rejected": f"b{i}"} for i in range(30)])
    parts = split_by_prompt(dataset, 1, eval=0.3)
    assert len(parts["eval"]) == 9 and len(parts["train"]) == 21
    assert not set(parts["train"]["prompt"]) & set(parts["eval"]["prompt"])
    parts = split_by_prompt(dataset, 1, eval=0.3, test=0.2)
    assert (len(parts["eval"]), len(parts["test"]), len(parts["train"])) == (9, 6, 15)
    assert not set(parts["test"]["prompt"]) & (set(parts["train"]["prompt"]) | set(parts["eval"]["prompt"]))
    with pytest.raises(DataError, match="at least 3 distinct prompts"):
        split_by_prompt(dataset.filter(lambda r: r["prompt"] in ("p0", "p1")), 1, eval=0.3, test=0.3)


def test_as_conversation_wraps_turns():
    dataset = as_conversation(Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"}]))
    assert dataset[0]["prompt"] == [{"role": "user", "content": "q"}]
    assert dataset[0]["chosen"] == [{"role": "assistant", "content": "a"}]
    assert as_conversation(dataset)[0] == dataset[0]


def test_capped_splits_keep_every_group_and_eval_groups_select():
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": f"b{i}", "kind": "ab"[i % 4 == 0]} for i in range(40)]
    path = write_jsonl(Path(tempfile.mkdtemp()) / "pairs.jsonl", rows)
    spec = DataSpec(source=str(path), group_column="kind", eval_fraction=0.5, max_eval_rows=4, test_fraction=0.2,
                    max_test_rows=2)
    splits = load_pairs(spec)
    assert sorted(splits.eval["group"]) == ["a", "a", "b", "b"]  # a is 3 in 4 of the pairs, still 2 of 4 here
    assert len(splits.test) == 2
    only_b = load_pairs(spec.model_copy(update={"eval_groups": ["b"], "max_eval_rows": None}))
    assert set(only_b.eval["group"]) == {"b"} and len({*only_b.test["group"]}) == 2  # test keeps every group
    with pytest.raises(DataError, match=r"data.eval_groups: no eval pair is in group\(s\) \['c'\]"):
        load_pairs(spec.model_copy(update={"eval_groups": ["c"]}))


def test_bad_rows_refuse_the_file_naming_lines_and_counting_reasons(tmp_path):
    good = [{"prompt": f"p{i}", "chosen": "yes", "rejected": "no"} for i in range(8)]
    bad = [{"prompt": "a", "chosen": "b"}, {"prompt": "a", "chosen": "", "rejected": "c"},
           {"prompt": "a", "chosen": 3, "rejected": "c"}, {"prompt": "a", "chosen": "x", "rejected": "x"},
           {"prompt": "b", "chosen": "y", "rejected": None}]
    rows = good[:2] + bad[:2] + good[2:4] + bad[2:] + good[4:]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as caught:
        load_pairs(DataSpec(source=str(path)))
    assert (f"data: data.source {str(path)!r} has 5 bad row(s) of 13 (missing rejected: 2, empty chosen: 1, "
            f"chosen not text: 1, chosen == rejected: 1); first: line 3 (missing rejected), line 4 (empty chosen), "
            f"line 7 (chosen not text), line 8 (chosen == rejected), line 9 (missing rejected). Fix them, or set "
            f"data.drop_bad_rows: true to drop them") == str(caught.value)
    spaced = tmp_path / "spaced.jsonl"  # blank lines: the line numbers are the file's, not row indexes
    spaced.write_text("\n".join(json.dumps(r) for r in good[:3] + [bad[0]]).replace("\n", "\n\n") + "\n")
    with pytest.raises(DataError, match=r"first: line 7 \(missing rejected\)"):
        load_pairs(DataSpec(source=str(spaced)))
    splits = load_pairs(DataSpec(source=str(path), drop_bad_rows=True, test_fraction=0))
    assert len(splits.train) + len(splits.eval) == 8 and "dropped 5 bad row(s) of 13" in splits.notes[0]
    csv = tmp_path / "pairs.csv"
    csv.write_text("prompt,chosen,rejected\nq,a,b\nr,a,a\n")
    with pytest.raises(DataError, match=r"first: row 2 \(chosen == rejected\)"):
        load_pairs(DataSpec(source=str(csv)))
