"""The embedded cluster's server process: the settings it runs with, how it stops, what a killed one leaves behind.

The benchmark measures CPU, not disk: ``fsync``, ``synchronous_commit`` and ``full_page_writes`` are off unless the
run is ``durable``. ``stop`` asks for a fast shutdown and then kills the whole process group, so backends whose
postmaster died first go too. A clean shutdown removes the cluster's shared memory; a postmaster killed with
SIGKILL (``kill -9``, the OOM killer) cannot, and PostgreSQL leaves it for the next start in the same data
directory, which never comes for a throwaway cluster: its System V interlock segment (``postmaster.pid`` names it)
and its dynamic shared memory files in /dev/shm (listed by their control segment, which the postmaster maps from
its start: ``mapped_shared_memory``). ``stop`` removes both.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import struct
import subprocess
from pathlib import Path

from harness.measure.process import kill_group

FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
IPC_RMID = 0
DSM_MAGIC = 0x9A503D32  # dsm.c's PG_DYNSHMEM_CONTROL_MAGIC
DSM_ITEMS = {14: struct.Struct("=II16x8x?7x"), 0: struct.Struct("=II8x?7x")}  # dsm_control_item on 64-bit, from
# PostgreSQL 14 (handle, refcnt, first_page, npages, impl_private_pm_handle, pinned) and before (no pages)


def has_pg_stat_statements(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    if os.access(pg_config, os.X_OK):
        out = subprocess.run([pg_config, "--pkglibdir"], capture_output=True, text=True).stdout.strip()
        if out and Path(out, "pg_stat_statements.so").exists():
            return True
    return any(Path(bindir.parent, sub, "pg_stat_statements.so").exists() for sub in ("lib", "lib/postgresql"))


def server_options(port: int, sockdir: Path, *, durable: bool, pgss: bool) -> list[str]:
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(sockdir),
        "max_connections": "300",
        "logging_collector": "off",
        "log_min_messages": "warning",
    }
    if not durable:
        settings |= FAST_SETTINGS
    if pgss:
        settings |= {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track_utility": "on"}
    return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]


def stop(proc: subprocess.Popen, pidfile: Path, controls: list[Path], version: str) -> None:
    """Fast shutdown (SIGINT), then the whole process group by force if it lingers (or we are interrupted); if it did
    not shut down (``pidfile`` is still there), the shared memory it left is removed."""
    try:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    finally:
        kill_group(proc)
        if pidfile.exists():
            remove_shared_memory(pidfile, controls, version)


def mapped_shared_memory(pid: int) -> list[Path]:
    """The POSIX shared memory files process ``pid`` maps (a postmaster: its DSM control segment)."""
    with contextlib.suppress(OSError):
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        return sorted({Path(line.split(maxsplit=5)[5]) for line in maps if " /dev/shm/PostgreSQL." in line})
    return []


def dsm_segments(control: bytes, major: int) -> list[str]:
    """The file names of the dynamic shared memory segments in use that a DSM control segment lists (PostgreSQL
    ``major``'s layout); none if it is not one."""
    item = DSM_ITEMS[14 if major >= 14 else 0]
    if len(control) < 16 or struct.unpack_from("=I", control)[0] != DSM_MAGIC:
        return []
    count = struct.unpack_from("=I", control, 4)[0]
    if 16 + count * item.size > len(control):
        return []
    items = (item.unpack_from(control, 16 + i * item.size) for i in range(count))
    return [f"PostgreSQL.{handle}" for handle, refcnt, _pinned in items if refcnt]


def remove_shared_memory(pidfile: Path, controls: list[Path], version: str) -> None:
    """Remove the System V segment ``pidfile`` names (once nothing is attached) and the DSM files ``controls`` list."""
    with contextlib.suppress(OSError, IndexError, ValueError, AttributeError):
        key, shmid = (int(n) for n in pidfile.read_text().splitlines()[6].split())
        rows = [row.split() for row in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
        if any(int(row[0]) == key and int(row[1]) == shmid and row[6] == "0" for row in rows):
            ctypes.CDLL(None).shmctl(shmid, IPC_RMID, None)
    major = int(version.split(".")[0]) if version[:1].isdigit() else 14
    for control in controls:
        with contextlib.suppress(OSError):
            for name in dsm_segments(control.read_bytes(), major):
                (control.parent / name).unlink(missing_ok=True)
            control.unlink()
