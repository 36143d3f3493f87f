"""harness.measure.cgroup: a cgroup's CPU time, and tree_cpu reading it where the tree owns its cgroup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.measure.cgroup import _locate, cgroup_cpu, own_cgroup
from harness.measure.counters import tree_cpu


def test_a_server_beside_its_parent_is_summed_as_a_tree():
    """The harness's servers share its cgroup (on a host, or in the bench container): the tree sum counts."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert own_cgroup(child.pid) is None
        assert own_cgroup(1) is None  # a hierarchy's root holds everything: never a tree's own
    finally:
        child.kill()
        child.wait()


# --- a real cgroup: a process tree started at the top of one, as a container's main process is -------------

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"
# The tree's root burns, a child burns and is reaped, then the root waits for stdin to close.
REAPED_CHILD = BURN.format(seconds=0.3) + f"""
import subprocess, sys
subprocess.run([sys.executable, "-c", {BURN.format(seconds=0.3)!r}], check=True)
print("ready", flush=True)
sys.stdin.read()
"""
# The root forks a grandchild that daemonizes (its parent exits, so it is reparented out of the tree) and burns.
ESCAPED_GRANDCHILD = """
import os, sys, time
read, write = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        end = time.process_time() + 0.6
        while time.process_time() < end:
            pass
        os.write(write, b"x")
    os._exit(0)
os.close(write)
os.wait()
os.read(read, 1)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A new cgroup beside this process's, in the hierarchy ``_cgroup`` reads (needs root)."""
    found = _locate(os.getpid(), Path("/proc"))
    if found is None or os.geteuid() != 0:
        pytest.skip("needs root and a cgroup hierarchy mounted here")
    group = found[1] / f"insertbench-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup here: {exc}")
    yield group
    deadline = time.monotonic() + 10
    while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    group.rmdir()


def start_in(group: Path, script: str) -> subprocess.Popen:
    def enter() -> None:
        (group / "cgroup.procs").write_text(str(os.getpid()))

    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, preexec_fn=enter)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def tree_sum(pid: int) -> float:
    """tree_cpu's figure without the cgroup: the process tree's own times and its reaped children's."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(t.user + t.system + t.children_user + t.children_system for t in (p.cpu_times() for p in procs))


def stop(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=10)


@pytest.mark.slow
def test_a_tree_at_the_top_of_its_cgroup_is_read_from_it_and_agrees_with_the_tree_sum(cgroup):
    proc = start_in(cgroup, REAPED_CHILD)
    try:
        assert own_cgroup(proc.pid) == cgroup
        summed, read = tree_sum(proc.pid), tree_cpu(proc.pid).total
        assert read == pytest.approx(sum(cgroup_cpu(cgroup)), abs=0.005)
        assert summed >= 0.6
        assert read == pytest.approx(summed, rel=0.05, abs=0.03)
    finally:
        stop(proc)


@pytest.mark.slow
def test_a_process_that_left_the_tree_still_counts_where_the_tree_owns_its_cgroup(cgroup):
    proc = start_in(cgroup, ESCAPED_GRANDCHILD)
    try:
        assert tree_sum(proc.pid) < 0.3  # the tree sum lost the daemonized grandchild's 0.6 s
        assert tree_cpu(proc.pid).total >= 0.6
    finally:
        stop(proc)
