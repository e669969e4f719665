"""Whether a process is alive on this machine: the owner check behind the experiment's run lock (tuner.experiment)
and the embedded model's stale staging folders (tuner.trial.embedded)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a stale lock or staging folder's owner)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
