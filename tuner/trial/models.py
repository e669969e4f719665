"""Where a spec's model.name points: a packaged model (`embedded`, `gemma3-270m`), a local folder, or a hub id (when
online)."""

from __future__ import annotations

from pathlib import Path

from tuner.trial.embedded import PACKAGED_MODELS, packaged_model_path
from tuner.errors import UserError


class ModelError(UserError):
    pass


def resolve(name: str) -> str:
    if name in PACKAGED_MODELS:
        return str(packaged_model_path(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.name: {path} has no config.json; expected a Hugging Face model folder, "
                             f"got {name!r}")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelError(f"model.name: no such folder, and not a hub id of the form org/name, got {name!r}")
    return name


def check_loadable(name: str) -> None:
    """Fail in the driver, before any trial starts, when the model's config cannot be read."""
    from transformers import AutoConfig

    target = resolve(name)
    try:
        AutoConfig.from_pretrained(target)
    except Exception as error:  # hub and file errors come in many types
        first = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
        raise ModelError(f"model.name: cannot load the config of {name!r}: {first}. {_fix_for(name, target)}") from None


def _fix_for(name: str, target: str) -> str:
    """The one command that fixes an unreadable model. A hub id is downloaded once, where there is a network, into
    a folder that model.name then names; `hf` is huggingface_hub's CLI (`huggingface-cli` no longer works in 1.x)."""
    if target != name:  # a local folder whose config.json does not load
        return "Point model.name at a Hugging Face model folder (config.json and weights), or use model.name=embedded"
    folder = f"models/{name.split('/')[-1]}"
    return (f"A hub id loads only with a network; download it once where there is one: "
            f"`hf download {name} --local-dir {folder}`, then set model.name={folder} (or use model.name=embedded)")


def check_backend(backend: str) -> None:
    """The unsloth backend, asked for by name, needs the gpu extra in this environment."""
    import importlib.util

    if backend == "unsloth" and importlib.util.find_spec("unsloth") is None:
        raise ModelError("model.backend: 'unsloth' needs the gpu extra: pip install -e '.[gpu]' (on a CUDA "
                         "machine), or model.backend=auto, got 'unsloth'")
