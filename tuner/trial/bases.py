"""Which full-precision base model a LoRA adapter belongs to, when the trial trained it on a 4-bit one.

The unsloth backend writes into the adapter's config the base it loaded: a pre-quantized hub repo
(`unsloth/Llama-3.2-1B-Instruct-bnb-4bit`), a local folder it quantized on the fly (already full precision on
disk), or a local folder that is itself quantized. LoRA weights are full precision, so the adapter loads with plain
PEFT on the full-precision base, which is what an export names and a merge or a generation on a CPU loads.

Reads names and config.json only: no unsloth, no bitsandbytes (export runs on machines without a GPU).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import UserError

# Unsloth's own naming of its pre-quantized repos: the full-precision repo's id plus one of these. The longer one
# first, so that `-unsloth-bnb-4bit` is removed whole.
QUANTIZED_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit")


class BaseModelError(UserError):
    pass


@dataclass(frozen=True)
class BaseModel:
    trained_on: str  # the base the adapter's config names: what the trial loaded
    name: str  # the full-precision base to load; `trained_on` itself when none is known
    quantized_only: bool  # `name` is a quantized folder with no full-precision counterpart known
    note: str = ""  # one line on what was mapped, or what loading needs; empty when nothing changed

    @property
    def changed(self) -> bool:
        return self.name != self.trained_on


def full_precision_base(trained_on: str, explicit: str | None = None, flag: str = "--base") -> BaseModel:
    """The full-precision base of an adapter trained on `trained_on`; `explicit` (what the user named with `flag`)
    overrides the rule."""
    if explicit is not None:
        return _named(trained_on, explicit, flag)
    quantization = quantized_folder(trained_on)
    if quantization:
        return BaseModel(trained_on, trained_on, True,
                         f"the base {trained_on} is quantized ({quantization}) and no full-precision counterpart is "
                         f"known: loading the adapter needs that quantized base (bitsandbytes on a CUDA machine), or "
                         f"--base naming the full-precision model")
    stripped = without_quantized_suffix(trained_on)
    if stripped != trained_on:
        return BaseModel(trained_on, stripped, False,
                         f"trained on the 4-bit {trained_on}; its full-precision base is {stripped} (LoRA weights are "
                         f"full precision, so the adapter loads on it)")
    return BaseModel(trained_on, trained_on, False)


def without_quantized_suffix(name: str) -> str:
    """A hub id of a pre-quantized repo without unsloth's suffix (matched in any case); anything else as it is."""
    if not is_hub_id(name) or Path(name).expanduser().exists():
        return name
    lowered = name.lower()
    suffix = next((s for s in QUANTIZED_SUFFIXES if lowered.endswith(s) and len(name) > len(s)), None)
    return name[: -len(suffix)] if suffix and not name[: -len(suffix)].endswith("/") else name


def is_hub_id(name: str) -> bool:
    """`org/name`, as the hub writes ids (a local path starts with `.`, `/` or `~`, or has more parts)."""
    return not name.startswith((".", "/", "~")) and name.count("/") == 1


def quantized_folder(name: str) -> str | None:
    """How a local model folder is quantized (`bitsandbytes 4-bit`), from its config.json; None for a folder whose
    weights are full precision, a missing folder, or a hub id."""
    config = Path(name).expanduser() / "config.json"
    if not config.is_file():
        return None
    try:
        quantization = json.loads(config.read_text()).get("quantization_config")
    except (ValueError, AttributeError):  # not a JSON object: not a config this rule can read
        return None
    if not isinstance(quantization, dict):
        return None
    method = str(quantization.get("quant_method", "")).lower()
    if method == "bitsandbytes":
        # transformers writes both spellings: `load_in_4bit` in older configs, `_load_in_4bit` in newer ones
        for bits in (4, 8):
            if quantization.get(f"load_in_{bits}bit") or quantization.get(f"_load_in_{bits}bit"):
                return f"bitsandbytes {bits}-bit"
        return None
    return method or None


def _named(trained_on: str, explicit: str, flag: str) -> BaseModel:
    path = Path(explicit).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BaseModelError(f"{flag}: {path} has no config.json; expected the full-precision model's folder, "
                                 f"got {explicit!r}")
        quantization = quantized_folder(str(path))
        if quantization:
            raise BaseModelError(f"{flag}: {path} is itself quantized ({quantization}); point {flag} at the "
                                 f"full-precision model, got {explicit!r}")
        explicit = str(path.resolve())
    elif not is_hub_id(explicit):
        raise BaseModelError(f"{flag}: no such folder, and not a hub id of the form org/name, got {explicit!r}")
    elif without_quantized_suffix(explicit) != explicit:
        raise BaseModelError(f"{flag}: {explicit} is a pre-quantized repo; point {flag} at the full-precision model "
                             f"(e.g. {without_quantized_suffix(explicit)}), got {explicit!r}")
    note = f"trained on {trained_on}; the full-precision base named with {flag} is {explicit}" \
        if explicit != trained_on else ""
    return BaseModel(trained_on, explicit, False, note)
