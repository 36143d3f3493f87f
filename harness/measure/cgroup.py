"""CPU time from a cgroup: what every process of a container used, by the kernel's own accounting.

``tree_cpu`` sums a process tree; where that tree is alone at the top of a cgroup of its own (a server run
as a container's main process, or under ``systemd-run``), the cgroup's counters are the same figure, user and
system seconds, and also keep the CPU of processes that left the tree (a daemonized grandchild reparented
elsewhere), which a tree sum loses. Where the tree shares its cgroup with its parent (the harness's servers
and load generator in one container, or anything started on a host), the cgroup's figure is not the tree's
and ``own_cgroup`` answers None: the tree sum stays the figure, and it means the same in and out of containers.

cgroup v2: ``cpu.stat``'s ``user_usec`` and ``system_usec`` (``usage_usec`` is their sum). cgroup v1 (and the
v1 half of a hybrid host, where Docker's cgroupfs driver accounts containers): ``cpuacct.stat``'s user and
system clock ticks. Their total matches the tree sum within a few percent (0.67 s against 0.65 s for a tree
that burned 0.6 s, measured here in both hierarchies), but the kernel splits a cgroup's time by the mode it
sampled on each tick, not as it splits each process's, so the user/system split can differ (0.21/0.46 against
the processes' 0.65/0.00 on this VM's kernel): compare totals. A process's cgroup comes from
``/proc/PID/cgroup``, and where its hierarchy is mounted (inside a container, only the container's own part)
from ``/proc/self/mountinfo``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path, PurePosixPath

import psutil

PROC = Path("/proc")


def cgroup_cpu(group: Path) -> tuple[float, float]:
    """User and system seconds used so far by every process that ran in ``group`` or its children."""
    stat = group / "cpu.stat"
    if stat.exists():
        values = dict(line.split() for line in stat.read_text().splitlines() if line.strip())
        return int(values["user_usec"]) / 1e6, int(values["system_usec"]) / 1e6
    ticks = dict(line.split() for line in (group / "cpuacct.stat").read_text().splitlines() if line.strip())
    hertz = os.sysconf("SC_CLK_TCK")
    return int(ticks["user"]) / hertz, int(ticks["system"]) / hertz


def _mounts(mountinfo: str) -> tuple[dict[str, tuple[str, str]], tuple[str, str] | None]:
    """cgroup v1 mounts by controller and the cgroup2 mount, each as (root inside the hierarchy, mount point)."""
    v1: dict[str, tuple[str, str]] = {}
    v2 = None
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        parts, after = fields.split(), tail.split()
        if len(parts) < 5 or len(after) < 3:
            continue
        where = (parts[3], parts[4].replace("\\040", " "))
        if after[0] == "cgroup2":
            v2 = where
        elif after[0] == "cgroup":
            for option in after[2].split(","):
                v1.setdefault(option, where)
    return v1, v2


def _locate(pid: int, proc: Path) -> tuple[str, Path] | None:
    """``pid``'s CPU-accounting cgroup (v1 cpuacct where mounted, else v2): its path in the hierarchy, its directory."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
        v1, v2 = _mounts((proc / "self" / "mountinfo").read_text())
    except OSError:
        return None
    paths = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    mount, path = (v1["cpuacct"], paths.get("cpuacct")) if "cpuacct" in v1 else (v2, paths.get(""))
    if mount is None or path is None:
        return None
    with contextlib.suppress(ValueError):
        return path, Path(mount[1], PurePosixPath(path).relative_to(mount[0]))
    return None


def own_cgroup(pid: int, proc: Path = PROC) -> Path | None:
    """The directory of ``pid``'s cgroup if ``pid`` is its top (its parent is elsewhere), not the hierarchy's root."""
    found = _locate(pid, proc)
    try:
        parent = psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None
    if found is None or found[0] == "/" or (parent and _locate(parent, proc) == found):
        return None
    return found[1]
