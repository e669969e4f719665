"""Model loading per backend: unsloth's 4-bit FastLanguageModel on a CUDA machine, transformers + PEFT elsewhere.

Called only inside a trial process; `load` imports unsloth before anything that imports trl/transformers/peft,
because unsloth patches them at import time and raises on a machine without a GPU.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from tuner.spec import Spec


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    peft_config: Any  # None when the backend already wrapped the model with LoRA


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    if cuda_available() and importlib.util.find_spec("unsloth") is not None:
        return "unsloth"
    return "hf"


def import_libraries(backend: str) -> None:
    """The training stack, unsloth first where it is used: it patches transformers, trl and peft as they load."""
    if backend == "unsloth":
        import unsloth  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401


def load(backend: str, model_path: str, spec: Spec) -> Loaded:
    if backend == "unsloth":
        return _load_unsloth(model_path, spec)
    return _load_hf(model_path, spec)


def _load_unsloth(model_path: str, spec: Spec) -> Loaded:
    import unsloth  # noqa: F401  (first: patches transformers, trl and peft)
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_path, max_seq_length=spec.model.max_length, load_in_4bit=spec.model.load_in_4bit, dtype=None
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=spec.lora.target_modules,
        use_gradient_checkpointing="unsloth",
        random_state=spec.trl_args().seed,
    )
    return Loaded(model, _with_pad_token(tokenizer), None)


def _load_hf(model_path: str, spec: Spec) -> Loaded:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_gpu = cuda_available()
    dtype = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    lora = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=spec.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return Loaded(model, _with_pad_token(tokenizer), lora)


def load_base(model_path: str) -> Loaded:
    """The frozen base model in float32 without LoRA, for the driver's once-per-search passes over the data."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    return Loaded(model, _with_pad_token(AutoTokenizer.from_pretrained(model_path)), None)


def _with_pad_token(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
