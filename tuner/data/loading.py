"""Preference pairs: loaded once by the driver from the bundled set, a local file or folder, or a hub dataset, in
any shape TRL's trainers read, brought to the one form of tuner.data.shapes under the `prompt` / `chosen` / `rejected`
columns TRL expects, and split three ways by prompt: train (what trials learn from), eval (what ASHA, Optuna and
the ranking see) and test (what nobody selects on; scored once when a search ends). No prompt is in two splits (for
a conversation, every turn before the answer). Each pair keeps a stable `pair_id` and, with a group column, its
`group`. The driver saves them as Arrow (tuner.experiment.prepare) for every trial to load.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from datasets import Dataset, load_dataset, load_from_disk
from datasets.fingerprint import generate_random_fingerprint
from datasets.table import InMemoryTable

from tuner.errors import UserError
from tuner.evidence.quality import GROUP  # the values of data.group_column, under one name (one owner)
from tuner.data.shapes import Pair, Shape, read_pairs
from tuner.spec import BUNDLED_DATA, DataSpec

BUNDLED_PATH = Path(__file__).parent / "bundled" / "preferences.jsonl"
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
COLUMNS = ("prompt", "chosen", "rejected")
PAIR_ID = "pair_id"  # a stable id per pair (the source's own `pair_id` column, else a hash of the pair's text)
SHOWN_BAD_ROWS = 5  # bad rows named in the message; the count per reason covers all of them


class DataError(UserError):
    pass


def load_source(source: str, split: str, cache_dir: str | None = None, split_key: str = "data.split") -> Dataset:
    """`cache_dir`: where `datasets` writes its Arrow copy of the source (default: the HF datasets cache). A file
    is one split; a folder (a hub set's files, e.g. data/train_prefs-00000-of-00001.parquet) and a hub set have the
    splits their file names give, chosen by `split` (the spec's `split_key`)."""
    if source == BUNDLED_DATA:
        source = str(BUNDLED_PATH)
    path = Path(source).expanduser()
    if path.suffix in FILE_FORMATS:
        if not path.is_file():
            raise DataError(f"data.source: no such file, got {source!r}")
        try:
            return load_dataset(FILE_FORMATS[path.suffix], data_files=str(path), split="train", cache_dir=cache_dir)
        except Exception as error:  # datasets raises many types for a malformed file
            raise DataError(f"data.source: cannot read {path} as {path.suffix[1:]}: {_first_line(error)}") from None
    if path.exists() and not path.is_dir():
        raise DataError(f"data.source: expected a .jsonl, .json, .parquet or .csv file or a folder, got {source!r}")
    if path.is_dir():
        source = str(path)
    try:
        return load_dataset(source, split=split, cache_dir=cache_dir)
    except ValueError as error:
        if "Unknown split" in str(error) or "Bad split" in str(error):
            raise DataError(f"{split_key}: {source!r} has no split {split!r}: {_first_line(error)}") from None
        raise DataError(f"data.source: {source!r} cannot be loaded (split {split!r}): {_first_line(error)}") from None
    except Exception as error:
        raise DataError(f"data.source: {source!r} is neither a local file nor a loadable hub dataset "
                        f"(split {split!r}): {_first_line(error)}") from None


def standardize(dataset: Dataset, spec: DataSpec, where: str, source: str | None = None,
                notes: list[str] | None = None, read: list[Shape] | None = None) -> Dataset:
    """The pairs under TRL's column names, in the one form of tuner.data.shapes (whatever shape of TRL's the source is
    in; what was recognised goes to `read`). A bad row refuses the file, naming the first ones and the count per
    reason; with `data.drop_bad_rows` they are dropped and the count goes to `notes`."""
    mapping = spec.columns.model_dump()
    # No prompt column under the default name: the prompt is implicit in chosen/rejected, as TRL reads them. A prompt
    # column the user named must be there.
    implicit = mapping["prompt"] not in dataset.column_names and spec.columns.prompt == "prompt"
    missing = [f"{role}={column!r}" for role, column in mapping.items()
               if column not in dataset.column_names and not (role == "prompt" and implicit)]
    if missing:
        raise DataError(f"data.columns: {where} has no column {', '.join(missing)}; "
                        f"its columns are {dataset.column_names}")
    group = spec.groups
    if group is not None and group not in dataset.column_names:
        raise DataError(f"data.group_column: {where} has no column {group!r}; its columns are "
                        f"{dataset.column_names}, got {spec.group_column!r}")
    pairs, shape = read_pairs(None if implicit else list(dataset[mapping["prompt"]]),
                              list(dataset[mapping["chosen"]]), list(dataset[mapping["rejected"]]))
    if read is not None:
        read.append(shape)
    kept = _without_bad_rows(pairs, spec, where, source, notes)
    # Only the pairs and their ids and groups go on: the source's other columns (H4's `messages`, scores, ...) are
    # not read by anything downstream, and would be saved and shipped to every trial.
    columns = {"prompt": [pairs[i].prompt for i in kept], "chosen": [pairs[i].chosen for i in kept],
               "rejected": [pairs[i].rejected for i in kept]}
    if group is not None:
        values = list(dataset[group])
        columns[GROUP] = [("" if values[i] is None else str(values[i])) for i in kept]
    if PAIR_ID in dataset.column_names and PAIR_ID not in mapping.values():
        values = list(dataset[PAIR_ID])
        columns[PAIR_ID] = [str(values[i]) for i in kept]
    return _with_pair_ids(_in_memory(columns), where)


def _in_memory(columns: dict[str, list]) -> Dataset:
    """A Dataset of these columns, with a random fingerprint: `datasets` would otherwise hash the whole table to make
    one, a transient copy of it (1 GB for 60k pairs of a few hundred tokens)."""
    return Dataset(InMemoryTable(pa.table(columns)), fingerprint=generate_random_fingerprint())


def _without_bad_rows(pairs: list[Pair], spec: DataSpec, where: str, source: str | None,
                      notes: list[str] | None) -> list[int]:
    """The indices of the rows that are pairs. Nothing is dropped silently: a dropped row changes what the search
    trains and selects on."""
    bad = [(i, pair.reason) for i, pair in enumerate(pairs) if pair.reason]
    if not bad:
        return list(range(len(pairs)))
    counts = Counter(reason for _, reason in bad)
    summary = f"{len(bad)} bad row(s) of {len(pairs)} ({', '.join(f'{r}: {n}' for r, n in counts.items())})"
    if not spec.drop_bad_rows:
        place = _row_place(source, len(pairs))
        first = ", ".join(f"{place(i)} ({reason})" for i, reason in bad[:SHOWN_BAD_ROWS])
        raise DataError(f"data: {where} has {summary}; first: {first}. Fix them, or set data.drop_bad_rows: true "
                        f"to drop them")
    if len(bad) == len(pairs):
        raise DataError(f"data: {where} has no usable pair: {summary}")
    if notes is not None:
        notes.append(f"data: dropped {summary} of {where} (data.drop_bad_rows)")
    bad_rows = {i for i, _ in bad}
    return [i for i in range(len(pairs)) if i not in bad_rows]


def _row_place(source: str | None, rows: int):
    """How to name row i of the file: its line number in a .jsonl (blank lines skipped), else `row N` (1-based)."""
    path = Path(source).expanduser() if source else None
    if path is not None and path.suffix == ".jsonl" and path.is_file():
        with path.open(encoding="utf-8", errors="replace") as handle:
            lines = [n for n, text in enumerate(handle, start=1) if text.strip()]
        if len(lines) == rows:
            return lambda i: f"line {lines[i]}"
    return lambda i: f"row {i + 1}"


def _local(source: str) -> str:
    return str(BUNDLED_PATH) if source == BUNDLED_DATA else source


def _with_pair_ids(dataset: Dataset, where: str) -> Dataset:
    """Ids that stay with a pair through splitting, shuffling and truncation: per-pair outcomes are keyed by them."""
    if PAIR_ID in dataset.column_names:
        ids = [str(i) for i in dataset[PAIR_ID]]
        repeated = [i for i, count in Counter(ids).items() if count > 1]
        if repeated:
            raise DataError(f"data: {where} has a {PAIR_ID} column whose ids repeat, e.g. {repeated[:3]}")
        return dataset.remove_columns(PAIR_ID).add_column(PAIR_ID, ids)
    ids, seen = [], Counter()
    for row in dataset.select_columns(list(COLUMNS)):
        digest = hashlib.sha1(json.dumps([row[c] for c in COLUMNS], sort_keys=True).encode()).hexdigest()[:12]
        seen[digest] += 1
        ids.append(digest if seen[digest] == 1 else f"{digest}-{seen[digest]}")
    return dataset.add_column(PAIR_ID, ids)


def split_by_prompt(dataset: Dataset, seed: int, **fractions: float) -> dict[str, Dataset]:
    """Held-out prompts, not held-out rows: two pairs on one prompt would otherwise leak the answer into a held-out
    split. `fractions` names each held-out split (e.g. eval=0.2, test=0.2), carved in that order from one seeded
    shuffle of the prompts (so adding a test split leaves the eval prompts as they were); the rest is `train`."""
    prompts = sorted({_prompt_key(p) for p in dataset["prompt"]})
    wanted = {name: f for name, f in fractions.items() if f > 0}
    if len(prompts) < len(wanted) + 1:
        raise DataError(f"data: a split into train and {' and '.join(wanted)} needs at least {len(wanted) + 1} "
                        f"distinct prompts, got {len(prompts)}")
    random.Random(seed).shuffle(prompts)
    assigned, start = {}, 0
    for position, (name, fraction) in enumerate(wanted.items()):
        room = len(prompts) - start - (len(wanted) - position)  # leave a prompt for each later split and train
        count = min(max(1, round(len(prompts) * fraction)), room)
        assigned.update({p: name for p in prompts[start : start + count]})
        start += count
    names = [assigned.get(_prompt_key(p), "train") for p in dataset["prompt"]]
    return {name: dataset.select([i for i, n in enumerate(names) if n == name])
            for name in ["train", *fractions]}


def _prompt_key(prompt) -> str:
    """A prompt as one string; for a conversation, every turn before the answer (system turns included)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


@dataclass
class Splits:
    train: Dataset
    eval: Dataset
    test: Dataset | None  # None: data.test_fraction is 0 and there is no data.test_source
    notes: list[str] = field(default_factory=list)  # what the user should know about the split
    read: Shape | None = None  # the shape data.source was recognised in, and what was done to it
    summary: list[str] = field(default_factory=list)  # lines on what was read, for the console's data line


def load_pairs(spec: DataSpec, cache_dir: str | None = None) -> Splits:
    """`cache_dir`: where `datasets` writes its Arrow copies of the sources (default: the HF datasets cache). Lines
    for the user (bad rows dropped, pairs dropped for the test source) are in the result's `notes`."""
    notes: list[str] = []
    read: list[Shape] = []
    dataset = standardize(load_source(spec.source, spec.split, cache_dir), spec, f"data.source {spec.source!r}",
                          _local(spec.source), notes, read)
    carve = {"eval": spec.eval_fraction if spec.eval_source is None else 0.0,
             "test": spec.test_fraction if spec.test_source is None else 0.0}
    parts = split_by_prompt(dataset, spec.seed, **carve)
    train, held_out, test = parts["train"], parts["eval"], parts["test"] if carve["test"] else None
    if spec.eval_source is not None:
        held_out = standardize(load_source(spec.eval_source, spec.eval_split, cache_dir, "data.eval_split"), spec,
                               f"data.eval_source {spec.eval_source!r}", _local(spec.eval_source), notes)
    if spec.test_source is not None:
        test = standardize(load_source(spec.test_source, spec.test_split, cache_dir, "data.test_split"), spec,
                           f"data.test_source {spec.test_source!r}", _local(spec.test_source), notes)
        # A test prompt must be one no trial trained on and no ranking looked at.
        test_prompts = {_prompt_key(p) for p in test["prompt"]}
        for name, split in (("train", train), ("eval", held_out)):
            overlapping = [i for i, p in enumerate(split["prompt"]) if _prompt_key(p) in test_prompts]
            if overlapping:
                notes.append(f"{len(overlapping)} {name} pairs dropped: their prompts are in data.test_source")
                keep = sorted(set(range(len(split))) - set(overlapping))
                if name == "train":
                    train = split.select(keep)
                else:
                    held_out = split.select(keep)
        if len(train) == 0 or len(held_out) == 0:
            raise DataError(f"data.test_source: every {'train' if len(train) == 0 else 'eval'} prompt is also in "
                            f"the test source {spec.test_source!r}")
    if spec.eval_groups is not None:
        held_out = only_groups(held_out, spec)
    train = train.shuffle(seed=spec.seed)
    if spec.max_rows:
        train = train.select(range(min(spec.max_rows, len(train))))
    held_out = first_rows(held_out, spec.max_eval_rows)
    if test is not None:
        test = first_rows(test, spec.max_test_rows)
    return Splits(train, held_out, test, notes, read[0])


LENGTH_SAMPLE = 1000  # pairs tokenized for the length line: a few seconds; the train pairs are a seeded shuffle


def describe_pairs(spec, splits: Splits) -> list[str]:
    """Lines for the console's data line: the shape data.source was read as and what was done to it, and the token
    lengths of the pairs the search uses (the train pairs a trial can consume, and the eval pairs; at most
    LENGTH_SAMPLE) against the shortest model.max_length, by model.name's tokenizer as TRL tokenizes them."""
    from transformers import AutoTokenizer

    from tuner.trial import models
    from tuner.evidence import quality

    lines = [f"data read: {splits.read.describe()}"] if splits.read is not None else []
    used = min(spec.rows_consumed() or len(splits.train), len(splits.train))
    train = splits.train.select(range(min(used, LENGTH_SAMPLE)))
    held_out = splits.eval.select(range(min(len(splits.eval), LENGTH_SAMPLE - len(train))))
    what = f"{len(train)} train and {len(held_out)} eval pairs"
    if len(train) < used or len(held_out) < len(splits.eval):
        what += " (a sample)"
    tokenizer = AutoTokenizer.from_pretrained(models.resolve(spec.model.name))
    return [*lines, quality.length_line(tokenizer, [*train, *held_out], quality.shortest_max_length(spec), what)]


def only_groups(held_out: Dataset, spec: DataSpec) -> Dataset:
    if GROUP not in held_out.column_names:
        raise DataError(f"data.eval_groups: needs a group column (data.group_column), got {spec.eval_groups}")
    present = sorted(set(held_out[GROUP]))
    unknown = [g for g in spec.eval_groups if g not in present]
    if unknown:
        raise DataError(f"data.eval_groups: no eval pair is in group(s) {unknown}; the groups are {present}, "
                        f"got {spec.eval_groups}")
    wanted = set(spec.eval_groups)
    return held_out.select([i for i, g in enumerate(held_out[GROUP]) if g in wanted])


def first_rows(split: Dataset, count: int | None) -> Dataset:
    """The first `count` rows, taken in turn from each group when the pairs are grouped, so that a capped eval or
    test split still holds every group (as evenly as the groups allow)."""
    if not count or count >= len(split):
        return split
    if GROUP not in split.column_names:
        return split.select(range(count))
    by_group: dict[str, list[int]] = {}
    for index, group in enumerate(split[GROUP]):
        by_group.setdefault(group, []).append(index)
    queues, chosen = list(by_group.values()), []
    while len(chosen) < count:
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return split.select(sorted(chosen))


def load_prepared(out_dir: str | Path, in_memory: bool = False) -> tuple[Dataset, Dataset]:
    """The (train, eval) pairs saved by prepare; `in_memory` reads them whole instead of memory-mapping the files,
    so that they pickle as data (for Ray's object store) rather than as paths on this machine."""
    return (load_from_disk(str(Path(out_dir) / "train"), keep_in_memory=in_memory),
            load_from_disk(str(Path(out_dir) / "eval"), keep_in_memory=in_memory))


def as_conversation(dataset: Dataset) -> Dataset:
    """Plain-text pairs as chat turns, so that TRL applies the model's chat template as it would at inference."""
    if not isinstance(dataset[0]["prompt"], str):
        return dataset
    return dataset.map(lambda row: {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
    })


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
