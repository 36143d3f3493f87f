"""Child processes the harness owns: ports, pinning, privilege drop, and killing whole process groups.

Every server, load generator and PostgreSQL runs in a process group of its own so that one
``killpg`` stops it and everything it spawned (granian's workers, PostgreSQL's backends). Each child
also asks the kernel for SIGTERM should the harness die without cleaning up (PR_SET_PDEATHSIG), so a
``kill -9`` of the harness still leaves no orphan behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def preexec(*, user: pwd.struct_passwd | None = None, cpus: set[int] | None = None) -> Callable[[], None]:
    """What a child runs before exec: pin to ``cpus``, drop to ``user``, die with its parent."""

    def run() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        if _libc is not None and hasattr(_libc, "prctl"):
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # after setuid, which clears it

    return run


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop ``proc``'s whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)

