"""harness.measure.cgroup on fixed files: where a process's cgroup is mounted, and its CPU counters (v1 and v2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.measure.cgroup import _locate, cgroup_cpu

HYBRID_MOUNTS = """\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


CONTAINER_V1_MOUNTS = "900 899 0:30 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n"


HZ = os.sysconf("SC_CLK_TCK")


CONTAINER_V2_MOUNTS = "900 899 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def fake_proc(tmp_path: Path, mountinfo: str, cgroup: str) -> Path:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(mountinfo)
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(cgroup)
    return tmp_path


@pytest.mark.parametrize(("mountinfo", "cgroup", "expected"), [
    (HYBRID_MOUNTS, "3:cpuacct:/insertbench/x\n1:cpu:/insertbench/x\n0::/\n", "/sys/fs/cgroup/cpuacct/insertbench/x"),
    (CONTAINER_V1_MOUNTS, "4:cpu,cpuacct:/docker/abc\n0::/\n", "/sys/fs/cgroup/cpu,cpuacct"),
    (CONTAINER_V2_MOUNTS, "0::/\n", "/sys/fs/cgroup"),
    (HYBRID_MOUNTS.replace("cpuacct", "net_cls"), "0::/user.slice/a\n", "/sys/fs/cgroup/unified/user.slice/a"),
])
def test_a_process_cgroup_is_found_where_its_hierarchy_is_mounted(tmp_path, mountinfo, cgroup, expected):
    path, directory = _locate(42, fake_proc(tmp_path, mountinfo, cgroup))
    assert directory == Path(expected) and path == cgroup.split(":", 2)[2].splitlines()[0]


def test_a_cgroup_outside_this_view_is_not_found(tmp_path):
    assert _locate(42, fake_proc(tmp_path, CONTAINER_V1_MOUNTS, "4:cpu,cpuacct:/docker/other\n")) is None
    assert _locate(7, tmp_path) is None  # no such process


def test_cpu_is_read_from_v2_and_v1_counters(tmp_path):
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.stat").write_text("usage_usec 3500000\nuser_usec 2500000\nsystem_usec 1000000\n")
    assert cgroup_cpu(tmp_path / "v2") == (2.5, 1.0)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "cpuacct.stat").write_text(f"user {15 * HZ // 10}\nsystem {HZ // 4}\n")
    assert cgroup_cpu(tmp_path / "v1") == (1.5, 0.25)
