"""The checks before an experiment folder is created: its name and storage, W&B and the Ray address. Each raises
InputError naming the problem; none writes anything."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tuner.errors import InputError
from tuner.experiment.storage import Location
from tuner.spec import Spec


def default_name(spec: Spec) -> str:
    return f"{'-'.join(spec.searched_methods())}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_storage(storage_path: str, name: str) -> Location:
    """Where the experiment will be, after checking that it can be created there; raises InputError. Writes
    nothing: a local folder is checked for permissions, object storage is asked (with short timeouts) whether its
    bucket exists."""
    if not name or "/" in name or name in (".", ".."):
        raise InputError(f"run.name: must be a plain folder name, got {name!r}")
    base = Location.parse(storage_path)
    location = base.child(name)
    if not base.is_local:
        base.probe()
        if location.exists():
            raise InputError(f"run.name: {location.uri} already exists; choose another --name, or continue it with "
                             f"--resume {location.uri}")
        return location
    path = Path(location.uri)
    if path.exists():
        raise InputError(f"run.name: {path} already exists; choose another --name, or continue it with "
                         f"--resume {path}")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"run.storage_path: {existing} is a file, not a folder, got {storage_path!r}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"run.storage_path: cannot create folders under {existing} (no write permission), "
                         f"got {storage_path!r}")
    return location


def check_wandb(mode: str) -> None:
    import importlib.util

    if mode != "off" and importlib.util.find_spec("wandb") is None:
        raise InputError(f"run.wandb: {mode!r} needs the wandb package: pip install -e '.[wandb]' "
                         f"(or set run.wandb: off), got {mode!r}")
    if mode == "online" and not _wandb_key_available():
        raise InputError("run.wandb: 'online' needs a W&B API key: set WANDB_API_KEY in the environment (or run "
                         "`wandb login`), or log offline (run.wandb: offline) and `wandb sync` later, got 'online'")


def _wandb_key_available() -> bool:
    """Where Ray's WandbLoggerCallback finds a key: the environment, a key hook, or `wandb login`'s netrc entry."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_SETUP_API_KEY_HOOK"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_address(address: str | None) -> None:
    """Fail fast on a Ray address where nothing listens, instead of Ray's minute of retries."""
    if not address or address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address: expected HOST:PORT of a Ray head node (ray start --head prints it), "
                         f"got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as error:
        raise InputError(f"--address: no Ray head node answers at {address} ({error.strerror or error}); "
                         f"start one with `ray start --head`, or leave --address out for a local Ray") from None
