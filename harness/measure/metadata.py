"""The environment a run records beside its samples, so a figure can be read against its machine.

CPU model and count, OS and kernel, Python and how it was built, the versions of every package that
takes part (the harness's and each app's pinned requirements), the git commit (and whether the tree was
dirty), the date, and the cores each role was pinned to. PostgreSQL's version and settings come from
the database handle.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from harness.axes import SERVERS
from harness.measure.apps import ROOT
from harness.report.format import python_summary  # noqa: F401 (the progress line and the report share it)

DRIVERS = ("asyncpg", "sqlalchemy", "psutil")  # the database layers' drivers and the harness's counters


def core_packages() -> tuple[str, ...]:
    """The packages whose versions a run records: the drivers, and every server's (``axes.SERVERS``)."""
    return tuple(dict.fromkeys([*DRIVERS, *(p for server in SERVERS.values() for p in server.recorded)]))


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def python_build(maps: str | None = None) -> dict:
    """How this interpreter was built: the same CPython version costs 10-20% more CPU without PGO/LTO.

    ``configure`` flags are what CPython reports of its own build; a distribution may build its
    interpreter with more than it reports (Debian's /usr/bin/python3 is PGO+LTO, its flags say neither),
    so whether libpython is a shared library is read off the running process's memory maps as well.
    """
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            maps = ""
    flags = sysconfig.get_config_var("CONFIG_ARGS") or ""
    return {
        "executable": os.path.realpath(sys.executable),
        "compiler": platform.python_compiler(),
        "configure": flags,
        "configure_pgo": "--enable-optimizations" in flags,
        "configure_lto": "--with-lto" in flags,
        "libpython": ("shared" if re.search(r"/libpython[\d.]*\.so", maps) else "static") if maps else None,
    }


def unoptimized(build: dict) -> bool:
    """A build without PGO around a shared libpython: pyenv's default, and 5-20% slower (docs/method.md)."""
    return not build.get("configure_pgo") and build.get("libpython") == "shared"


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _requirement_names() -> list[str]:
    names = set(core_packages())
    for req in ROOT.glob("apps/*/requirements.txt"):
        for line in req.read_text().splitlines():
            name = re.split(r"[\s=<>!~\[;]", line.strip(), maxsplit=1)[0]
            if name and not name.startswith(("#", "-")):
                names.add(name.lower())
    return sorted(names)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _requirement_names():
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def collect(affinity: dict[str, list[int]], postgres: dict) -> dict:
    """Everything a run records about where it ran."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "python_build": python_build(),
        "packages": package_versions(),
        "postgres": postgres,
        "affinity": affinity,
        "loadgen": "insertbench loadgen (C, epoll, keep-alive, one process)",
    }
