"""Errors the command line turns into one line naming the fix, and exit code 2."""

from __future__ import annotations

import errno

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device; the user's quota reached


class UsageError(Exception):
    """A selection or option that cannot run; the message names the valid values or the fix."""


class RunStopped(Exception):
    """A fault no further sample can get past (the database died, the results disk is full): the run stops, keeps
    every finished sample, and the message says what happened and how to resume."""


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, is a write refused for want of space (ENOSPC, EDQUOT)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False

