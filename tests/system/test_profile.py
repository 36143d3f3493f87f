"""CPU by package on this machine: py-spy itself, its failures, and real profiled windows of real servers
under load (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.analysis.profile import cell_profile, inclusive_shares
from harness.measure.apps import discover
from harness.measure.counters import tree_cpu
from harness.measure.load import LoadGenerator, LoadSpec
from harness.measure.owners import cpu_by_package, owners_by_thread
from harness.measure.profile import (
    NO_PTRACE,
    Packages,
    ProfileError,
    ProfileProbe,
    Profiler,
    check_py_spy,
    split_frame,
    split_stack,
)
from harness.measure.servers import serve
from harness.model import Cell


def test_py_spy_can_read_a_python_process_here() -> None:
    assert check_py_spy().name == "py-spy"


def test_without_ptrace_the_error_says_how_to_allow_it(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to take CAP_SYS_PTRACE away")
    wrapper = tmp_path / "py-spy"
    wrapper.write_text(f'#!/bin/sh\nexec {setpriv} --bounding-set=-sys_ptrace --inh-caps=-sys_ptrace '
                       f'{check_py_spy()} "$@"\n')
    wrapper.chmod(0o755)
    with pytest.raises(ProfileError) as raised:
        check_py_spy(wrapper)
    assert str(raised.value) == NO_PTRACE and "--cap-add SYS_PTRACE" in NO_PTRACE and "\n" not in NO_PTRACE
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(ProfileError) as raised, Profiler(child.pid, tmp_path, "x", py_spy=wrapper, timeout=20):
            pass
    finally:
        child.kill()
        child.wait()
    assert str(raised.value) == NO_PTRACE


def test_a_process_that_is_not_python_is_an_error_not_a_hang(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(ProfileError, match="py-spy"), Profiler(sleeper.pid, tmp_path, "sleep", timeout=20):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.fixture(scope="module")
def load_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("load")


@pytest.fixture(params=["uvicorn", "granian"])
def server_name(request: pytest.FixtureRequest) -> str:
    return request.param


def loaded_window(server, load_dir: Path, seconds: float = 4.0) -> LoadGenerator:
    spec = LoadSpec(host="127.0.0.1", port=server.port, method="POST", path="/items", body="text", inserts=1,
                    concurrency=16, rate=0, warmup=0.5, duration=seconds, prefix=f"profile-{time.time_ns()}")
    return LoadGenerator(spec, load_dir)


IN_FRAMES = {"uvicorn": {"uvicorn", "httptools", "uvloop", "app"}, "granian": {"granian", "uvloop", "app"}}


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["asgi", "fastapi"])
def test_a_profiled_window_finds_the_servers_packages(framework: str, server_name: str, load_dir: Path,
                                                      tmp_path: Path) -> None:
    app = discover()[framework]
    with serve(app, server_name, db="none", dsn="postgresql://unused@127.0.0.1:1/unused") as server, \
            loaded_window(server, load_dir) as load:
        load.wait_warm()
        with Profiler(server.pid, tmp_path, f"{framework}-{server_name}-none-1") as prof:
            cpu0 = tree_cpu(server.pid)
            load.go()
            result = load.wait_done()
            cpu1 = tree_cpu(server.pid)
        recording = prof.stop()
    assert result.summary["requests"] > 0
    shares = recording.shares()
    packages = Packages.current(recording.binaries)
    frames = {frame for stack in recording.stacks for frame in split_stack(stack).frames}
    seen = {packages.of_file(split_frame(frame)[1]) for frame in frames}
    expected = IN_FRAMES[server_name] | ({"fastapi", "starlette"} if framework == "fastapi" else set())
    assert expected <= seen, (seen, recording.samples, recording.errors, result.summary["requests"])  # C, Rust placed
    assert server_name in shares and sum(shares.values()) == pytest.approx(1), shares
    user = sum(t.user for t in recording.threads)
    assert user == pytest.approx((cpu1 - cpu0).user, rel=0.1, abs=0.1)  # the threads are the tree's CPU (in ticks)
    main = assert_inclusive_at_least_innermost(recording, packages)
    assert all("_run_module_as_main (<frozen runpy>" in stack for stack in main)
    if server_name == "granian":  # its Rust runtime thread does HTTP and is no Python thread: never sampled
        sampled = {split_stack(stack).tid for stack in recording.stacks}
        rust = [t for t in recording.threads if t.name.startswith("tokio")]
        assert rust and all(t.tid not in sampled and t.owner == "granian" for t in rust)
    flamegraph = json.loads(recording.flamegraph.read_text())
    assert recording.flamegraph.name == f"{framework}-{server_name}-none-1.speedscope.json"
    native = [p for p in flamegraph["profiles"] if not p["name"].startswith("Python frames only")]
    assert native and sum(sum(p["weights"]) for p in native) == recording.samples
    assert sum(sum(p["weights"]) for p in flamegraph["profiles"]) == recording.samples + sum(
        recording.python_stacks.values())


@pytest.mark.slow
def test_a_greenlets_samples_run_under_the_request_that_spawned_them(database, load_dir: Path, tmp_path: Path) -> None:
    """FastAPI with SQLAlchemy's AsyncSession: py-spy sees the stacks of the greenlets SQLAlchemy runs its work in
    apart from the request's; continuing greenlet_spawn's callers, they run under the top level too."""
    with serve(discover()["fastapi"], "uvicorn", db="orm", dsn=database.dsn) as server, \
            loaded_window(server, load_dir) as load:
        load.wait_warm()
        with Profiler(server.pid, tmp_path, "fastapi-uvicorn-orm-1") as prof:
            load.go()
            assert load.wait_done().summary["requests"] > 0
        recording = prof.stop()
    packages = Packages.current(recording.binaries)
    main = assert_inclusive_at_least_innermost(recording, packages)
    in_greenlets = [n for samples in owners_by_thread(main, packages).values() for s, n in samples.items()
                    if not s.rooted and "greenlet" in s.packages]
    assert in_greenlets, main  # which, without greenlet_spawn's callers, would not be under the top level
    cpu = recording.cpu()
    assert cpu.inclusive["sqlalchemy"] > cpu.innermost["sqlalchemy"], cpu


def assert_inclusive_at_least_innermost(recording, packages: Packages) -> dict[str, int]:
    """Every package's inclusive share is at least its innermost one, in the window and in the cell's CPU; the
    interpreter's top level (runpy's ``_run_module_as_main``, standard library) is under every sample of the
    processes' main threads. Returns those threads' stacks."""
    cpu = recording.cpu()
    assert cpu.innermost == recording.shares()
    for package, share in cpu.innermost.items():
        assert cpu.inclusive.get(package, 0.0) >= share - 1e-9, (package, cpu)
    assert all(0 < share <= 1 for share in [*cpu.inclusive.values(), *cpu.inclusive_system.values()]), cpu
    user, system = sum(t.user for t in recording.threads), sum(t.system for t in recording.threads)
    under = inclusive_shares(cpu.inclusive, cpu.inclusive_system, user, system)
    for package, share, _ in cell_profile(cpu.innermost, user, system):
        assert under.get(package, 0.0) >= share - 1e-9, (package, under)
    main = {stack: n for stack, n in recording.stacks.items() if (parts := split_stack(stack)).tid == parts.pid}
    assert main, recording.stacks
    top = cpu_by_package(main, packages)  # the main threads' samples, each weighing the same
    assert top.inclusive["stdlib"] == pytest.approx(1.0, abs=0.01), top
    return main


@pytest.mark.slow
def test_the_probe_records_shares_or_the_reason(server_name: str, load_dir: Path, tmp_path: Path) -> None:
    cell = Cell("asgi", server_name, "none")
    with serve(discover()["asgi"], server_name, db="none", dsn="postgresql://unused@127.0.0.1:1/unused") as server, \
            loaded_window(server, load_dir, 1.0) as load:
        load.wait_warm()
        probe = ProfileProbe(server.pid, cell, tmp_path)
        probe.start()
        load.go()
        load.wait_done()
        recorded = probe.stop()
    assert "profile_error" not in recorded, recorded
    assert sum(recorded["profile_shares"].values()) == pytest.approx(1)
    assert set(recorded["profile_shares"]) <= set(recorded["profile_inclusive"])
    assert recorded["profile_inclusive"][server_name] >= recorded["profile_shares"][server_name]
    assert all(0 < share <= 1 for share in recorded["profile_inclusive_system"].values())
    assert recorded["profile_flamegraph"] == f"profiles/asgi-{server_name}-none-1.speedscope.json"
    assert (tmp_path / recorded["profile_flamegraph"]).is_file()
    assert recorded["profile_samples"] > 0
    broken = ProfileProbe(2**22 + 7, cell, tmp_path)  # no such process
    broken.start()
    assert set(broken.stop()) == {"profile_error"}
