"""Results folders belong to their owner: tuner writes them owner-only, and reads one only when the user running it
owns it and no one else can write to it.

Reading a results folder can run code stored in it: `--resume` unpickles Ray Tune's state (`tuner.pkl`, the
searcher's state, the trials' pickled fields), and the adapters and tokenizers of its checkpoints are loaded by
`tuner.export` and `analysis.generations`. A folder planted by someone else (on a shared NFS path, say) would run
their code as you. So every file and folder under it must be owned by you and writable by no one else, or the
command stops and says so; `--trust` reads it anyway, once you know where it came from.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from tuner.errors import UserError

# Files and folders tuner creates (and Ray creates for a local run) are readable and writable by their owner only.
OWNER_ONLY_UMASK = 0o077
TRUST_HINT = "--trust"


class UntrustedFolder(UserError):
    """A results folder (or something in it) is not owned by this user, or others can write to it."""


def problems(folder: Path, uid: int | None = None) -> list[str]:
    """One line per file or folder under `folder` (itself included) that another user owns or can write to; a
    symbolic link is judged by itself and by what it points to."""
    uid = os.getuid() if uid is None else uid
    found = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        entries = [root_path] if root_path == folder else []
        entries += [root_path / name for name in dirs + files]
        for path in entries:
            problem = _problem(path, uid)
            if problem:
                found.append(f"{path}: {problem}")
    return found


def _problem(path: Path, uid: int) -> str | None:
    try:
        link = path.lstat()
        info = path.stat() if stat.S_ISLNK(link.st_mode) else link
    except FileNotFoundError:  # gone since the listing, or a link to nothing: nothing to load
        return None
    for owner in {link.st_uid, info.st_uid}:
        if owner != uid:
            return f"owned by uid {owner}, not by you (uid {uid})"
    writers = [who for bit, who in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others")) if info.st_mode & bit]
    if writers:
        return f"writable by {' and '.join(writers)} (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def check_folder(folder: Path, trust: bool = False) -> None:
    """Raise UntrustedFolder naming the first file or folder under `folder` that someone else owns or can write,
    unless `trust`."""
    if trust or not folder.exists():
        return
    found = problems(folder)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise UntrustedFolder(
            f"{found[0]}{more}: reading a results folder can run code stored in it (Ray's pickled state, model "
            f"files), so tuner reads only folders that you own and no one else can write; check where it came "
            f"from, then pass {TRUST_HINT} to read it anyway")


@contextlib.contextmanager
def owner_only_files():
    """Everything created inside (by this process and the processes it starts) is readable by its owner only."""
    previous = os.umask(OWNER_ONLY_UMASK)
    try:
        yield
    finally:
        os.umask(previous)
