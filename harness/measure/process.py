"""Child processes and temporary directories the harness owns: ports, pinning, privilege drop, cleanup.

Every server, load generator and PostgreSQL runs in a process group of its own so that one
``killpg`` stops it and everything it spawned (granian's workers, PostgreSQL's backends). Each child
also asks the kernel for SIGTERM should the harness die without cleaning up (PR_SET_PDEATHSIG), so a
``kill -9`` of the harness still leaves no orphan behind.

Each temporary directory (``insertbench-*`` in the system's temp dir) records the process that owns it;
one whose owner is gone (the harness was killed with SIGKILL, say) is removed by the next run.
Files holding a secret are created only in a directory that no other user can write to, and never
through a symlink (``O_EXCL | O_NOFOLLOW``), then handed to their user by descriptor.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
TEMP_PREFIX = "insertbench-"
OWNER_FILE = "owner"  # in each temporary directory: "<pid> <process start time>" of the process that made it


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
    """Stop ``proc``'s whole process group: SIGTERM, then SIGKILL after ``grace`` seconds; return once it is gone.

    The SIGKILL is sent even when an interrupt cuts the polite wait short. The group outlives its leader when the
    leader died first (a PostgreSQL whose postmaster was killed: its backends linger), so the wait is for every
    process of the group, not only ``proc``.
    """
    try:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        deadline = time.monotonic() + grace
        while group_running(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def group_running(pgid: int, proc_root: Path = Path("/proc")) -> bool:
    """Whether a process of group ``pgid`` still runs (a zombie, which only waits to be reaped, does not)."""
    for path in proc_root.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, _ppid, group = path.read_text().rsplit(")", 1)[1].split()[:3]  # after "pid (comm)"
            if int(group) == pgid and state not in "ZX":
                return True
    return False


# Why a child ended, for a message: its signal's name and what usually sends it.
SIGNAL_HINTS = {
    signal.SIGKILL: "out of memory? dmesg names what the kernel's OOM killer killed",
    signal.SIGSEGV: "a crash in native code",
    signal.SIGABRT: "aborted, by an assertion or a fatal error in native code",
    signal.SIGBUS: "a bad memory access in native code",
    signal.SIGTERM: "told to stop",
    signal.SIGINT: "interrupted",
}


def describe_exit(returncode: int | None) -> str:
    """How a child ended, from ``Popen.returncode``: "exited with status 3", "was killed by signal 9 (SIGKILL: …)"."""
    if returncode is None:
        return "is still running"
    if returncode >= 0:
        return f"exited with status {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"was killed by signal {number}"
    hint = SIGNAL_HINTS.get(signal.Signals(number))
    return f"was killed by signal {number} ({name}{': ' + hint if hint else ''})"


def watch_exit(pid: int) -> Callable[[], float | None]:
    """When child ``pid`` ended (``time.monotonic()``), or None while it runs: a thread waits for it without reaping
    it (``WNOWAIT``: its ``Popen`` still collects its status), so a death is timed even when noticed later."""
    ended: list[float] = []

    def wait() -> None:
        with contextlib.suppress(ChildProcessError):  # already reaped: it ended before the thread began
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            ended.append(time.monotonic())

    if hasattr(os, "waitid"):
        threading.Thread(target=wait, name=f"watch-{pid}", daemon=True).start()
    return lambda: ended[0] if ended else None


def create_private(path: Path, user: pwd.struct_passwd | None = None) -> int:
    """A new file (mode 0600) open for writing, owned by ``user`` if given; never an existing file or a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if user is not None:
        os.fchown(fd, user.pw_uid, user.pw_gid)
    return fd


def write_private(path: Path, text: str, user: pwd.struct_passwd | None = None) -> None:
    """Write ``text`` to a new file made by ``create_private``."""
    with os.fdopen(create_private(path, user), "w") as file:
        file.write(text)


def _identity(pid: int) -> str:
    return f"{pid} {psutil.Process(pid).create_time():.2f}"


def _owner_alive(directory: Path) -> bool:
    try:
        pid, started = (directory / OWNER_FILE).read_text().split()
        proc = psutil.Process(int(pid))
        return abs(proc.create_time() - float(started)) < 0.5 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def remove_stale(tmp: Path | None = None) -> list[Path]:
    """Remove the ``insertbench-*`` directories of ours whose owning process is gone; return them.

    A directory is ours when we own it and it names its owner; one without that record (another tool's,
    or another user's) is left alone.
    """
    removed = []
    for path in Path(tmp or tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        with contextlib.suppress(OSError, ValueError):
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not _owner_alive(path):
                shutil.rmtree(path)
                removed.append(path)
    return removed


def owned_tempdir(kind: str) -> Path:
    """A new private directory ``insertbench-<kind>-*`` in the temp dir, recording that this process owns it."""
    path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{kind}-"))
    write_private(path / OWNER_FILE, _identity(os.getpid()) + "\n")
    return path


@contextlib.contextmanager
def workspace(kind: str) -> Iterator[Path]:
    """An ``owned_tempdir`` that also holds every temporary directory made meanwhile; removed at the end.

    While it is open it is ``tempfile``'s default directory, so the servers' and profilers' temporary
    directories land inside it and go with it, or with a later ``remove_stale`` if this process is killed.
    """
    path, previous = owned_tempdir(kind), tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(path, ignore_errors=True)


def split_cpus(workers: int) -> tuple[set[int] | None, set[int] | None]:
    """The server's cores (the last ``workers``, leaving one) and everything else's."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    count = min(workers, len(cpus) - 1)
    return set(cpus[-count:]), set(cpus[:-count])
