"""Model loading per backend: unsloth's 4-bit FastLanguageModel on a CUDA machine, transformers + PEFT elsewhere.

Called only inside a trial process; `load` imports unsloth before anything that imports trl/transformers/peft,
because unsloth patches them at import time and raises on a machine without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

from tuner.errors import UserError
from tuner.spec import Spec


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    peft_config: Any  # None when the backend already wrapped the model with LoRA


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(requested: str, on_gpu: bool | None = None) -> str:
    """The backend `model.backend` means where a trial runs: `auto` is unsloth on a GPU when it is installed.
    `on_gpu` is whether that process has a GPU (default: this one's); the driver asks for the trials', which have
    one exactly when `resources.gpu` > 0 (Ray hides the GPUs from a task that asks for none)."""
    if requested != "auto":
        return requested
    if (cuda_available() if on_gpu is None else on_gpu) and importlib.util.find_spec("unsloth") is not None:
        return "unsloth"
    return "hf"


@dataclass(frozen=True)
class PassRuntime:
    """How the passes over the data outside the trials (the shared reference, the base model's eval and test
    scores, the test scoring of trials) load the base model: as the trials load theirs, so that the reference
    log-probs a DPO trial trains against, and the base model a trial is compared with, are the trials' own base
    model, 4-bit quantization included. Also part of the pass cache's fingerprint (tuner.passes.cache)."""

    backend: str  # "hf" or "unsloth"
    device: str  # "cpu" or "cuda"
    precision: str  # "float32"; "bfloat16" (hf on a GPU: float32 on one without bfloat16); "4bit", "16bit" (unsloth)

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"

    def describe(self) -> str:
        return f"{self.backend}, {self.precision}, on the trials' {'GPU share' if self.on_gpu else 'CPU'}"


def pass_runtime(spec: Spec) -> PassRuntime:
    """The runtime of the trials' base model under `spec`, decided in the driver (a laptop or a CPU head node may
    have no GPU, nor unsloth, of its own: `auto` is resolved as the trials will resolve it, from resources.gpu)."""
    on_gpu = spec.resources.gpu > 0
    backend = resolve_backend(spec.model.backend, on_gpu)
    if backend == "unsloth":
        return PassRuntime("unsloth", "cuda", "4bit" if spec.model.load_in_4bit else "16bit")
    return PassRuntime("hf", "cuda", "bfloat16") if on_gpu else PassRuntime("hf", "cpu", "float32")


CPU_RUNTIME = PassRuntime("hf", "cpu", "float32")


def import_libraries(backend: str) -> None:
    """The training stack, unsloth first where it is used: it patches transformers, trl and peft as they load."""
    if backend == "unsloth":
        _import_unsloth()
    import peft  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401


def load(backend: str, model_path: str, spec: Spec) -> Loaded:
    if backend == "unsloth":
        return _load_unsloth(model_path, spec)
    return _load_hf(model_path, spec)


def _import_unsloth():
    """unsloth, imported before transformers, trl and peft (it patches them as they load), with its logits: TRL's
    DPO and ORPO losses, tuner's eval and the passes all compute log-probs from the logits, which unsloth's forward
    leaves empty (for its own fused loss) unless UNSLOTH_RETURN_LOGITS is set."""
    os.environ.setdefault("UNSLOTH_RETURN_LOGITS", "1")
    import unsloth

    return unsloth


def _load_unsloth(model_path: str, spec: Spec) -> Loaded:
    FastLanguageModel = _import_unsloth().FastLanguageModel

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


def load_base(model_path: str, runtime: PassRuntime = CPU_RUNTIME, max_length: int | None = None) -> Loaded:
    """The frozen base model without LoRA, loaded as `runtime` says, for the passes over the data outside the
    trials (tuner.passes.tasks). The unsloth runtime runs in a Ray task on the trials' GPU share (set up by
    `prepare_pass_process`), never in the driver."""
    if runtime.backend == "unsloth":
        return _load_base_unsloth(model_path, runtime, max_length)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32
    if runtime.on_gpu and cuda_available() and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16  # as _load_hf loads a trial's model on a GPU
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    if runtime.on_gpu and cuda_available():
        model = model.to("cuda")
    return Loaded(model.eval(), _with_pad_token(AutoTokenizer.from_pretrained(model_path)), None)


def _load_base_unsloth(model_path: str, runtime: PassRuntime, max_length: int | None) -> Loaded:
    """The trials' own 4-bit (or 16-bit) base, as _load_unsloth loads it, without LoRA."""
    model, tokenizer = _import_unsloth().FastLanguageModel.from_pretrained(
        model_name=model_path, max_seq_length=max_length or 2048, load_in_4bit=runtime.precision == "4bit", dtype=None)
    return Loaded(model.eval(), _with_pad_token(tokenizer), None)


def prepare_pass_process(runtime: PassRuntime, cpus: float, gpu_share: float) -> str:
    """First thing in a Ray task that runs a pass: the trial's share of the machine (tuner.trial.device: threads,
    the GPU memory cap, unsloth's own compile folder) and the libraries in the order the backend needs. Returns the
    task's scratch folder (unsloth's compiled modules), for the caller to remove."""
    import tempfile

    from tuner.trial import device

    scratch = tempfile.mkdtemp(prefix="tuner-pass-")
    device.set_up(cpus, gpu_share if runtime.on_gpu else 0, scratch,
                  os.path.join(tempfile.gettempdir(), "tuner-compile-cache"))
    import_libraries(runtime.backend)
    return scratch


class PassUnavailable(UserError):
    """This machine cannot load the base model the way the search's passes did (tuner.passes.tasks.runtime_of)."""


def check_available(runtime: PassRuntime) -> None:
    """In a process that is about to load the base model as `runtime` says (analysis or export scoring a model
    after the search): refuse, in one line, when this machine cannot, rather than mix numbers from two runtimes."""
    missing = []
    if runtime.on_gpu and not cuda_available():
        missing.append("a CUDA GPU")
    if runtime.backend == "unsloth" and importlib.util.find_spec("unsloth") is None:
        missing.append("the gpu extra (pip install -e '.[gpu]')")
    if missing:
        raise PassUnavailable(f"this search's base-model passes ran with {runtime.describe()}; scoring another model "
                        f"the same way needs {' and '.join(missing)}, which this machine lacks: run it where the "
                        f"trials ran")


def _with_pad_token(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
