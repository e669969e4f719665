"""Every shape of preference data TRL's trainers read, as files of each format, brought to one form (tuner.data.shapes),
and the rows that cannot be a pair named by line and reason."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tuner.data.loading import DataError, load_pairs, split_by_prompt
from tuner.data.shapes import read_pairs
from tuner.spec import DataSpec


def turns(*pairs):
    return [{"role": role, "content": content} for role, content in pairs]


def h4_row(i):
    """HuggingFaceH4/ultrafeedback_binarized: a text prompt that full conversations repeat, and columns nobody reads."""
    chosen = turns(("user", f"question {i}?"), ("assistant", f"Answer {i}, right."))
    return {"prompt": f"question {i}?", "chosen": chosen,
            "rejected": turns(("user", f"question {i}?"), ("assistant", f"Answer {i}, wrong.")),
            "messages": chosen, "prompt_id": f"id{i}", "score_chosen": 8.0, "score_rejected": 3.5}


def trl_row(i):
    """trl-lib/ultrafeedback_binarized: conversations only, the prompt implicit in them."""
    return {"chosen": turns(("user", f"question {i}?"), ("assistant", "Answer, right.")),
            "rejected": turns(("user", f"question {i}?"), ("assistant", "Answer, wrong."))}


def hh_row(i):
    """Anthropic/hh-rlhf: text with \\n\\nHuman: / \\n\\nAssistant: turns; both answers start alike."""
    context = f"\n\nHuman: question {i}?\n\nAssistant: Which one?\n\nHuman: the first"
    return {"chosen": context + "\n\nAssistant: The answer is right.",
            "rejected": context + "\n\nAssistant: The answer is wrong."}


def write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)
    return path


def load(path, **spec):
    return load_pairs(DataSpec(source=str(path), eval_fraction=0.25, test_fraction=0.25, **spec))


def every_pair(splits):
    return [row for split in (splits.train, splits.eval, splits.test) for row in split]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".json"])
def test_h4_shape_takes_the_prompt_from_the_conversations_and_ignores_the_other_columns(tmp_path, suffix):
    splits = load(write(tmp_path / f"h4{suffix}", [h4_row(i) for i in range(12)]))
    assert splits.train.column_names == ["prompt", "chosen", "rejected", "pair_id"]
    pairs = every_pair(splits)
    assert len(pairs) == 12
    for pair in pairs:
        i = pair["prompt"][0]["content"].split()[1].rstrip("?")
        assert pair["prompt"] == turns(("user", f"question {i}?"))  # not the text prompt followed by the turn again
        assert pair["chosen"] == turns(("assistant", f"Answer {i}, right."))
        assert pair["rejected"] == turns(("assistant", f"Answer {i}, wrong."))
    assert splits.read.describe() == ("conversations, prompt taken from chosen/rejected; its prompt column not used "
                                      "(chosen/rejected hold the prompt, as TRL reads them); up to 2 turns")


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".json"])
def test_trl_shape_implicit_prompt_in_conversations(tmp_path, suffix):
    splits = load(write(tmp_path / f"trl{suffix}", [trl_row(i) for i in range(8)]))
    pair = splits.train[0]
    assert pair["prompt"][0]["role"] == "user" and len(pair["prompt"]) == 1
    assert pair["chosen"] == turns(("assistant", "Answer, right."))
    assert splits.read.describe() == "conversations, prompt taken from chosen/rejected; up to 2 turns"


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".json", ".csv"])
def test_hh_rlhf_text_is_split_at_the_last_assistant_turn(tmp_path, suffix):
    splits = load(write(tmp_path / f"hh{suffix}", [hh_row(i) for i in range(8)]))
    pair = splits.train[0]
    i = pair["prompt"][0]["content"].split()[1].rstrip("?")
    # whole answers: a character-level common prefix would have cut "The answer is " into the prompt
    assert pair["prompt"] == turns(("user", f"question {i}?"), ("assistant", "Which one?"), ("user", "the first"))
    assert pair["chosen"] == turns(("assistant", "The answer is right."))
    assert pair["rejected"] == turns(("assistant", "The answer is wrong."))
    assert splits.read.describe().startswith("hh-rlhf text turns") and "up to 4 turns" in splits.read.describe()


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_text_shapes_explicit_and_implicit_prompt(tmp_path, suffix):
    explicit = load(write(tmp_path / f"explicit{suffix}",
                          [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(8)]))
    assert isinstance(explicit.train[0]["prompt"], str) and explicit.read.describe() == "text, explicit prompt"
    implicit = load(write(tmp_path / f"implicit{suffix}",
                          [{"chosen": f"Question {i}? Yes.", "rejected": f"Question {i}? No."} for i in range(8)]))
    pair = implicit.train[0]  # TRL's common prefix, the space before the answers left with them
    assert pair["prompt"].startswith("Question ") and pair["chosen"] == " Yes." and pair["rejected"] == " No."
    assert implicit.read.describe() == "text, prompt taken from chosen/rejected (their common start)"


def test_explicit_prompt_as_turns_or_text_with_answer_turns_and_system_turns(tmp_path):
    rows = [{"prompt": turns(("system", "Be brief."), ("user", f"q{i}")), "chosen": turns(("assistant", "yes")),
             "rejected": turns(("assistant", "no"))} for i in range(4)]
    rows += [{"prompt": f"t{i}", "chosen": turns(("assistant", "yes")), "rejected": turns(("assistant", "no"))}
             for i in range(4)]
    splits = load(write(tmp_path / "explicit.jsonl", rows))
    prompts = {json.dumps(p["prompt"]) for p in every_pair(splits)}
    assert json.dumps(turns(("system", "Be brief."), ("user", "q0"))) in prompts
    assert json.dumps(turns(("user", "t0"))) in prompts  # a text prompt is the user's turn
    assert splits.read.describe() == "conversations, explicit prompt; up to 3 turns; 4 system turns kept"


def test_multi_turn_prompt_is_every_turn_before_the_last_answer_and_splits_keep_it_whole(tmp_path):
    def row(i, j, answer):
        return turns(("system", "sys"), ("user", f"q{i}"), ("assistant", f"first {j}"), ("user", "more?"),
                     ("assistant", answer))
    # two conversations on question i that differ in an earlier assistant turn are two prompts
    rows = [{"chosen": row(i, j, "good"), "rejected": row(i, j, "bad")} for i in range(6) for j in range(2)]
    splits = load(write(tmp_path / "multi.parquet", rows))
    pair = splits.train[0]
    assert [t["role"] for t in pair["prompt"]] == ["system", "user", "assistant", "user"]
    assert pair["chosen"] == turns(("assistant", "good"))
    assert splits.read.describe().endswith("up to 5 turns; 12 system turns kept")
    keys = [{json.dumps(p) for p in split["prompt"]} for split in (splits.train, splits.eval, splits.test)]
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]
    assert sum(len(k) for k in keys) == 12
    parts = split_by_prompt(splits.train, 0, eval=0.5)  # the whole conversation is the key, not its first turn
    assert len(parts["eval"]) >= 1 and len(parts["train"]) >= 1


def test_columns_map_other_names(tmp_path):
    """argilla/distilabel-intel-orca-dpo-pairs: `input` is the prompt; its `system` column is not read."""
    rows = [{"system": "", "input": f"q{i}", "chosen": "yes", "rejected": "no", "status": "tie"} for i in range(6)]
    splits = load(write(tmp_path / "orca.parquet", rows), columns={"prompt": "input"})
    assert splits.train.column_names == ["prompt", "chosen", "rejected", "pair_id"]
    with pytest.raises(DataError, match=r"^data.columns: .* has no column prompt='question'; its columns are"):
        load(tmp_path / "orca.parquet", columns={"prompt": "question"})  # a prompt column the user named must be there
    messages = write(tmp_path / "messages.jsonl", [{"messages": turns(("user", "q"), ("assistant", "a"))}])
    with pytest.raises(DataError, match=r"^data.columns: .* has no column chosen='chosen', rejected='rejected'"):
        load(messages)


BAD = [
    ({"chosen": turns(("user", "q"), ("assistant", "a")), "rejected": turns(("user", "other"), ("assistant", "b"))},
     "chosen and rejected do not share a prompt"),
    ({"chosen": turns(("user", "q"), ("assistant", "a"), ("user", "thanks")),
      "rejected": turns(("user", "q"), ("assistant", "b"))}, "last turn of chosen is not the assistant's"),
    ({"chosen": turns(("user", "q"), ("assistant", " ")), "rejected": turns(("user", "q"), ("assistant", "b"))},
     "empty chosen after the prompt"),
    ({"chosen": turns(("human", "q"), ("assistant", "a")), "rejected": turns(("human", "q"), ("assistant", "b"))},
     "role 'human' is neither system, user nor assistant"),
    ({"chosen": turns(("user", "q"), ("assistant", "a")), "rejected": turns(("user", "q"), ("assistant", "a"))},
     "chosen == rejected"),
    ({"chosen": turns(("user", "q"), ("assistant", "a1"), ("user", "more"), ("assistant", "a")),
      "rejected": turns(("user", "q"), ("assistant", "a2"), ("user", "more"), ("assistant", "b"))},
     "chosen and rejected do not share a prompt"),  # they differ before the last turn
]


def test_bad_conversations_are_named_by_line_and_reason_and_dropped_on_request(tmp_path):
    good = [trl_row(i) for i in range(8)]
    rows = good[:3] + [row for row, _ in BAD] + good[3:]
    path = write(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError) as caught:
        load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"data: data.source {str(path)!r} has 6 bad row(s) of 14 (")
    assert ("first: line 4 (chosen and rejected do not share a prompt), line 5 (last turn of chosen is not the "
            "assistant's), line 6 (empty chosen after the prompt), line 7 (role 'human' is neither system, user nor "
            "assistant), line 8 (chosen == rejected)") in message
    splits = load(path, drop_bad_rows=True)
    assert len(every_pair(splits)) == 8
    assert splits.notes[0].startswith(
        "data: dropped 6 bad row(s) of 14 (chosen and rejected do not share a prompt: 2, ")


def test_each_reason_from_the_reader():
    for row, reason in BAD:
        pairs, _ = read_pairs(None, [row["chosen"]], [row["rejected"]])
        assert pairs[0].reason == reason, row
    hh = hh_row(0)
    cases = [
        ({"chosen": hh["chosen"] + "\n\nHuman: thanks", "rejected": hh["rejected"]},
         "last turn of chosen is not the assistant's"),
        ({"chosen": hh["chosen"], "rejected": hh["rejected"].replace("question", "query")},
         "chosen and rejected do not share a prompt"),
        ({"chosen": hh["chosen"].replace("The answer is right.", ""), "rejected": hh["rejected"]},
         "empty chosen after the prompt"),
    ]
    for row, reason in cases:
        pairs, shape = read_pairs(None, [hh["chosen"], row["chosen"]], [hh["rejected"], row["rejected"]])
        assert pairs[0].reason is None and pairs[1].reason == reason, row
    # text with an implicit prompt: two answers with nothing in common share no prompt
    pairs, _ = read_pairs(None, ["Yes.", "Q? yes"], ["No.", "Q? no"])
    assert pairs[0].reason == "chosen and rejected share no prompt" and pairs[1].reason is None
    # answers only, and no prompt column to put before them
    pairs, _ = read_pairs(None, [turns(("assistant", "a"))], [turns(("assistant", "b"))])
    assert pairs[0].reason.startswith("missing prompt")
    # ShareGPT's from/value turns go through TRL's ChatML conversion; its roles are not chat-template roles
    pairs, _ = read_pairs(None, [[{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]],
                          [[{"from": "user", "value": "q"}, {"from": "assistant", "value": "b"}]])
    assert pairs[0].reason is None and pairs[0].prompt == turns(("user", "q"))


def test_a_folder_of_hub_files_has_named_splits(tmp_path):
    """A hub set's files as downloaded (data/train_prefs-*.parquet, data/test_prefs-*.parquet)."""
    folder = tmp_path / "ultrafeedback" / "data"
    folder.mkdir(parents=True)
    write(folder / "train_prefs-00000-of-00001.parquet", [h4_row(i) for i in range(10)])
    write(folder / "test_prefs-00000-of-00001.parquet", [h4_row(i) for i in range(100, 104)])
    source = str(folder.parent)
    splits = load_pairs(DataSpec(source=source, split="train_prefs", test_source=source, test_split="test_prefs"))
    assert len(splits.train) + len(splits.eval) == 10 and len(splits.test) == 4
    with pytest.raises(DataError, match=r"^data.split: .* has no split 'train': .*train_prefs"):
        load_pairs(DataSpec(source=source))
    with pytest.raises(DataError, match=r"^data.test_split: .* has no split 'test'"):
        load_pairs(DataSpec(source=source, split="train_prefs", test_source=source))
    from tuner.spec import SpecError, validate_spec

    with pytest.raises(SpecError, match=r"data: test_split names a split of test_source, which is not set"):
        validate_spec({"data": {"source": source, "split": "train_prefs", "test_split": "test_prefs"}})


class WordTokenizer:
    """One token per word, no chat template: lengths easy to count."""

    chat_template = None

    def __call__(self, text):
        return {"input_ids": text.split()}


def test_the_data_line_names_the_shape_and_the_token_lengths_against_max_length(tmp_path):
    from tuner.data import loading as data
    from tuner.trial import models
    from tuner.evidence.quality import length_line
    from tuner.spec import validate_spec

    pairs = [{"prompt": "w " * p, "chosen": "a " * c, "rejected": "b " * r}
             for p, c, r in [(2, 3, 1), (4, 1, 1), (3, 10, 2), (5, 2, 2)]]
    # prompts 2, 4, 3, 5 tokens; each pair's longer answer 3, 1, 10, 2; whole pairs 5, 5, 13, 7
    assert length_line(WordTokenizer(), pairs, 6, "4 pairs") == (
        "data tokens (median / 95th percentile over 4 pairs): prompts 3 / 5, answers 2 / 10; 2 of 4 pairs longer "
        "than model.max_length=6, truncated")
    spec = validate_spec({"data": {"source": str(write(tmp_path / "hh.parquet", [hh_row(i) for i in range(8)]))},
                          "model": {"max_length": 64}, "train": {"max_steps": 1, "per_device_train_batch_size": 2},
                          "search": {"space": {"model.max_length": {"type": "choice", "values": [32, 16]}}}})
    splits = data.load_pairs(spec.data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "resolve", lambda name: name)
        patch.setattr("transformers.AutoTokenizer.from_pretrained", lambda name: WordTokenizerWithTemplate())
        lines = data.describe_pairs(spec, splits)
    assert lines[0] == ("data read: hh-rlhf text turns, split at the last \\n\\nAssistant: into conversations; up to "
                        "4 turns")
    # the pairs a trial consumes (1 step x 2) and the eval pairs, against the shortest max_length searched
    assert lines[1].startswith(f"data tokens (median / 95th percentile over 2 train and {len(splits.eval)} eval "
                               f"pairs): prompts ")
    assert lines[1].endswith("longer than model.max_length=16, truncated")


class WordTokenizerWithTemplate(WordTokenizer):
    chat_template = "turns"

    def apply_chat_template(self, turns, add_generation_prompt=False, tokenize=True):
        return [word for turn in turns for word in [turn["role"], *turn["content"].split()]]


def test_conversations_need_a_model_with_a_chat_template(tmp_path):
    from tuner.data import checks
    from tuner.trial import models
    from tuner.errors import InputError
    from tuner.spec import validate_spec

    spec = validate_spec({"data": {"source": str(write(tmp_path / "trl.json", [trl_row(i) for i in range(8)]))}})
    splits = load_pairs(spec.data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "resolve", lambda name: name)
        patch.setattr("transformers.AutoTokenizer.from_pretrained", lambda name: WordTokenizer())
        with pytest.raises(InputError, match=r"^model.name: embedded has no chat template, which the conversations"):
            checks.check_eval_pairs(spec, splits.eval)
