"""The one base of every problem with what a user gave (spec, data, model, storage, address, a results folder).

The CLIs print a UserError's message in one line and exit with code 2; anything else is a bug in tuner and keeps
its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

USER_ERROR = 2  # the exit code of every user mistake


class UserError(ValueError):
    """Something the user gave is wrong; the message says what, where, and how to fix it."""


class InputError(UserError):
    """A command-line input or the environment it names (storage path, Ray address, W&B) is wrong."""


def guarded(prog: str, job: Callable[..., int], *args, debug: bool = False) -> int:
    """`job(*args)`, with a UserError printed as `prog: message` on stderr and exit code 2 (`debug` re-raises)."""
    try:
        return job(*args)
    except UserError as error:
        if debug:
            raise
        print(f"{prog}: {error}", file=sys.stderr)
        return USER_ERROR
