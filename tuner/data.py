"""Preference pairs: loaded once by the driver from the bundled set, a local file or a hub dataset, mapped to the
`prompt` / `chosen` / `rejected` columns TRL expects, and split into train and eval so that no prompt is in both.
The driver saves them as Arrow (tuner.experiment.prepare) for every trial to load.
"""

from __future__ import annotations

import random
from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk

from tuner.errors import UserError
from tuner.spec import BUNDLED_DATA, DataSpec

BUNDLED_PATH = Path(__file__).parent / "data" / "preferences.jsonl"
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
COLUMNS = ("prompt", "chosen", "rejected")


class DataError(UserError):
    pass


def load_source(source: str, split: str, cache_dir: str | None = None) -> Dataset:
    """`cache_dir`: where `datasets` writes its Arrow copy of the source (default: the HF datasets cache)."""
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
    if path.exists():
        raise DataError(f"data.source: expected a .jsonl, .json, .parquet or .csv file, got {source!r}")
    try:
        return load_dataset(source, split=split, cache_dir=cache_dir)
    except Exception as error:
        raise DataError(f"data.source: {source!r} is neither a local file nor a loadable hub dataset "
                        f"(split {split!r}): {_first_line(error)}") from None


def standardize(dataset: Dataset, spec: DataSpec, where: str) -> Dataset:
    mapping = spec.columns.model_dump()
    missing = [f"{role}={column!r}" for role, column in mapping.items() if column not in dataset.column_names]
    if missing:
        raise DataError(f"data.columns: {where} has no column {', '.join(missing)}; "
                        f"its columns are {dataset.column_names}")
    dataset = dataset.select_columns(list(mapping.values()))
    dataset = dataset.rename_columns({column: role for role, column in mapping.items() if column != role})
    kept = dataset.filter(_is_usable_pair)
    if len(kept) == 0:
        raise DataError(f"data: {where} has no usable pair (each needs non-empty prompt, chosen and rejected, "
                        f"with chosen != rejected), got {len(dataset)} rows")
    return kept


def _is_usable_pair(row: dict) -> bool:
    values = [row[c] for c in COLUMNS]
    return all(isinstance(v, (str, list)) and len(v) > 0 for v in values) and row["chosen"] != row["rejected"]


def split_by_prompt(dataset: Dataset, eval_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Held-out prompts, not held-out rows: two pairs on one prompt would otherwise leak the answer into eval."""
    prompts = sorted({_prompt_key(p) for p in dataset["prompt"]})
    if len(prompts) < 2:
        raise DataError(f"data: a train/eval split needs at least 2 distinct prompts, got {len(prompts)}")
    random.Random(seed).shuffle(prompts)
    eval_count = min(max(1, round(len(prompts) * eval_fraction)), len(prompts) - 1)
    eval_prompts = set(prompts[:eval_count])
    is_eval = [_prompt_key(p) in eval_prompts for p in dataset["prompt"]]
    train = dataset.select([i for i, e in enumerate(is_eval) if not e])
    held_out = dataset.select([i for i, e in enumerate(is_eval) if e])
    return train, held_out


def _prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else repr(prompt)


def load_pairs(spec: DataSpec, cache_dir: str | None = None) -> tuple[Dataset, Dataset]:
    dataset = standardize(load_source(spec.source, spec.split, cache_dir), spec, f"data.source {spec.source!r}")
    if spec.eval_source is None:
        train, held_out = split_by_prompt(dataset, spec.eval_fraction, spec.seed)
    else:
        train = dataset
        held_out = standardize(load_source(spec.eval_source, spec.eval_split, cache_dir), spec,
                               f"data.eval_source {spec.eval_source!r}")
    train = train.shuffle(seed=spec.seed)
    if spec.max_rows:
        train = train.select(range(min(spec.max_rows, len(train))))
    if spec.max_eval_rows:
        held_out = held_out.select(range(min(spec.max_eval_rows, len(held_out))))
    return train, held_out


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
