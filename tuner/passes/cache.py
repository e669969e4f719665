"""The base model's passes over the data, kept across searches: a store under `$TUNER_CACHE/passes/` keyed by a
fingerprint of everything that determines their numbers.

DPO's reference log-probs and the base model's per-pair scores depend only on the model's files (weights, config,
tokenizer, chat template), the pairs, TRL's tokenization settings (tuner.trial.reference.PER_TRIAL_FIELDS, max_length),
how the pass runs (backend, precision, device) and the library versions that tokenize and compute; never on beta,
learning rate or LoRA. `fingerprint` hashes exactly those; a second search whose fingerprint matches reuses the
entry, any difference gives another fingerprint and a fresh pass.

The model's files are hashed by content, not by size and mtime: a model copied or re-downloaded keeps its numbers
(a copy has new mtimes, and would miss), and a model re-saved with the same size but other weights must not hit.
Hashing a 135M model's 0.5 GB takes about a second; each file's hash is remembered by (path, size, mtime, inode),
so a later search on the same folder pays one stat() per file.

An entry is written in a temporary folder beside the store and renamed into place (readers see it whole or not at
all); its `manifest.json`, written last, lists every file with its size and SHA-256. `lookup` checks them all: an
entry that is partial (a writer killed before the rename leaves only its temporary folder, removed later), has a
file missing, truncated or changed, or another fingerprint is removed and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

FORMAT = 1  # bump when what an entry holds, or how a pass computes it, changes
MANIFEST = "manifest.json"
_HASHES_FILE = "file-hashes.json"
_CHUNK = 1 << 22


def root() -> Path:
    from tuner.trial.embedded import cache_dir

    return cache_dir() / "passes"


# ---------------------------------------------------------------------------------------------- fingerprint


def model_files(model_path: str) -> Path | None:
    """The folder of the model's files: a local folder as given, a hub id's snapshot in the local HF cache (its
    name is the commit); None when there is no local copy to hash (then nothing is cached)."""
    folder = Path(model_path)
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_path, local_files_only=True))
    except Exception:  # not in the local cache, or offline errors of many types
        return None


def hash_folder(folder: Path, store: Path | None = None) -> str:
    """SHA-256 over every file's relative path and content hash (hidden files and folders left out: the HF
    cache's `.cache/`, editors' files), with each file's hash remembered in `store` by (path, size, mtime, inode)."""
    store = store or root()
    memo_file = store / _HASHES_FILE
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    changed = False
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts)):
        real = path.resolve()  # the HF cache's snapshot files are links to blobs
        stat = real.stat()
        key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
        if key not in memo:
            memo[key] = file_sha256(real)
            changed = True
        digest.update(f"{path.relative_to(folder).as_posix()}\0{memo[key]}\n".encode())
    if changed:
        _write_atomically(memo_file, json.dumps(memo))
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_pairs(dataset) -> str:
    """SHA-256 of the pairs' content in their order (every column, pair ids and groups included: the scores are
    stored per pair, in order)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(sorted(dataset.column_names)).encode())
    for batch in dataset.iter(batch_size=256):
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def tokenization(spec) -> dict[str, Any]:
    """TRL's settings of the reference pass that change its numbers: the tokenization fields and those that change
    the reference's forward (reference.PER_TRIAL_FIELDS), as the pass's DPOConfig has them (TRL's defaults, then
    tuner's, then the spec's)."""
    from tuner.trial import methods, reference

    args = methods.training_args(spec.model_copy(update={"method": "dpo"}), "unused", on_gpu=False,
                                 precompute_reference=True, device_free=True)
    return {name: _plain(getattr(args, name)) for name in sorted(reference.PER_TRIAL_FIELDS) if hasattr(args, name)}


def fingerprint(kind: str, spec, runtime, model_path: str, datasets: dict, store: Path | None = None
                ) -> tuple[str, dict] | tuple[None, str]:
    """(hex fingerprint, the inputs it hashes) of a pass of `kind` of the model at `model_path` over `datasets`
    (name -> Dataset); (None, why) when it cannot be fingerprinted (a hub model with no local copy)."""
    import torch
    import transformers
    import trl

    folder = model_files(model_path)
    if folder is None:
        return None, f"{model_path} has no local copy whose files can be hashed"
    inputs = {
        "format": FORMAT,
        "kind": kind,
        "model_files": hash_folder(folder, store),
        "pairs": {name: hash_pairs(dataset) for name, dataset in sorted(datasets.items())},
        "max_length": spec.model.max_length,
        "trl": tokenization(spec),
        # How the pass loads and runs the model (backends.PassRuntime: the trials' backend, precision and device).
        "backend": runtime.backend, "dtype": runtime.precision, "device": runtime.device,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     **_quantization_versions(runtime)},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest(), inputs


def _quantization_versions(runtime) -> dict[str, str]:
    """unsloth's and bitsandbytes' versions when the pass runs on unsloth (read from the installed metadata: this
    process may not import unsloth)."""
    from importlib import metadata

    if runtime.backend != "unsloth":
        return {}
    found = {}
    for package in ("unsloth", "bitsandbytes"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "absent"
    return found


def _plain(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


# ---------------------------------------------------------------------------------------------- the store


@dataclass
class Lookup:
    entry: Path | None  # the verified entry folder, None on a miss
    rebuilt: str | None = None  # why an entry found was removed (corrupt, partial), for the user's line


class PassCache:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else root()

    def entry_dir(self, fingerprint: str) -> Path:
        return self.path / fingerprint

    def lookup(self, fingerprint: str) -> Lookup:
        """The entry of `fingerprint` when it is complete and intact; a damaged one is removed (and said why)."""
        entry = self.entry_dir(fingerprint)
        if not entry.exists():
            return Lookup(None)
        problem = verify(entry, fingerprint)
        if problem is None:
            return Lookup(entry)
        _remove(entry)
        return Lookup(None, problem)

    def store(self, fingerprint: str, inputs: dict, fill: Callable[[Path], None]) -> Path:
        """Make the entry: `fill(folder)` writes its files into a temporary folder; the manifest (sizes and SHA-256
        of every file) is written last and the folder renamed into place. A concurrent writer's entry, if it got
        there first and is intact, is kept."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        _remove_stale_temporaries(self.path)
        staging = Path(tempfile.mkdtemp(prefix=f".{fingerprint[:16]}.{socket.gethostname()}.{os.getpid()}.",
                                        dir=self.path))
        try:
            fill(staging)
            files = {p.relative_to(staging).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
                     for p in sorted(staging.rglob("*")) if p.is_file()}
            manifest = {"format": FORMAT, "fingerprint": fingerprint, "inputs": inputs, "files": files,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
            target = self.entry_dir(fingerprint)
            if target.exists() and verify(target, fingerprint) is not None:
                _remove(target)
            try:
                os.rename(staging, target)
            except OSError:  # another search stored it meanwhile (a folder there, not empty): theirs is as good
                if verify(target, fingerprint) is not None:
                    raise
            return target
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def verify(entry: Path, fingerprint: str) -> str | None:
    """None when `entry` is complete and intact, else what is wrong with it."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return "no readable manifest (a partial entry)"
    if not isinstance(manifest, dict) or manifest.get("fingerprint") != fingerprint \
            or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        return "its manifest is for another fingerprint or format"
    present = {p.relative_to(entry).as_posix() for p in entry.rglob("*") if p.is_file()} - {MANIFEST}
    if present != set(manifest["files"]):
        return "its files are not the ones its manifest lists"
    for name, expected in manifest["files"].items():
        path = entry / name
        if path.stat().st_size != expected.get("size") or file_sha256(path) != expected.get("sha256"):
            return f"{name} does not match its checksum"
    return None


def _remove(entry: Path) -> None:
    """Out of the way first (a rename is atomic), then deleted: no reader sees half a removal."""
    doomed = entry.with_name(f".removed-{entry.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(entry, doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_stale_temporaries(store: Path, older_than_s: float = 6 * 3600) -> None:
    """Temporary folders of writers killed before their rename (a live writer's is younger than this)."""
    now = time.time()
    for path in store.glob(".*"):
        if path.is_dir() and now - path.stat().st_mtime > older_than_s:
            shutil.rmtree(path, ignore_errors=True)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
