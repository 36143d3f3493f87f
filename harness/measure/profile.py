"""CPU by package: which code a cell's server CPU per insert is spent in, from one profiled window.

The matrix says what an insert costs; this says where it goes. For one extra window per cell, py-spy is
attached from outside to every process of the server tree (``record --subprocesses --native --threads``)
and samples each Python thread's stack, native frames included, so C, Cython and Rust code (asyncpg's
protocol, httptools, uvloop, pydantic-core, msgspec, granian) is seen as itself. Each sample goes to the
package that owns its innermost frame (``harness.measure.owners`` says which, and why), and inclusively to
every package with a frame on its stack (what runs under SQLAlchemy: its code and everything it calls).

Samples count a thread whenever it is runnable, and the server's threads share one core, so each
thread's samples share out that thread's user CPU, read from ``/proc/<pid>/task/<tid>/stat`` at the
window's edges. ``harness.analysis.profile.cell_profile`` then scales the shares to the cell's user CPU
per insert and adds its system CPU as ``kernel``, so the parts add up to the cell's figure.

py-spy cannot unwind a native stack through a greenlet (SQLAlchemy's asyncio layer runs its work in
greenlets) and drops such a sample: a quarter of the samples of the ORM cells, most of them SQLAlchemy's.
So a second recording of Python frames only runs beside the native one; when the native one dropped
more than 2% of its samples, the split between Python packages comes from the Python-only recording, and
the native samples only divide each Python package's part further (into the C code it calls, the kernel).

    with Profiler(server.pid, run_dir / "profiles", "fastapi-uvicorn-orm-1") as prof:
        load.go()
        load.wait_done()
    recording = prof.stop()          # stacks, threads' CPU, the flame graph's path
    shares = recording.shares()      # package -> share of user CPU, by innermost frame
    cpu = recording.cpu()            # the same, with the inclusive shares of user and system CPU
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.measure.owners import (
    NATIVE,
    PackageCpu,
    Packages,
    ThreadCpu,
    cpu_by_package,
    parse_folded,
    process_owner,
    split_frame,
    split_stack,
    thread_samples,
)
from harness.measure.process import preexec
from harness.model import Cell

RATE = 100  # samples per second and thread (py-spy's default)
DROPPED = 0.02  # dropped native samples above which the Python-only recording splits Python packages
NO_PTRACE = ("py-spy may not attach to the server (ptrace is not permitted here): in a container add "
             "--cap-add SYS_PTRACE; on a host set kernel.yama.ptrace_scope=0 (sysctl), or run as root")
MISSING = "py-spy is not installed: it comes with insertbench's dependencies (pip install py-spy==0.4.3)"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProfileError(RuntimeError):
    """py-spy is missing, may not attach, or failed; the message is one line naming the fix."""


# ---------------------------------------------------------------------------- py-spy and the window


def py_spy_path() -> Path:
    """py-spy beside this interpreter (a virtualenv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = beside if beside.is_file() else shutil.which("py-spy")
    if not found:
        raise ProfileError(MISSING)
    return Path(found)


def _failure(output: str) -> str:
    """py-spy's error output, as one line naming the fix."""
    if re.search(r"permission denied|operation not permitted|os error (1|13)\b", output, re.IGNORECASE):
        return NO_PTRACE
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith(" ")]
    return "py-spy failed: " + (next((x for x in lines if x.startswith("Error")), lines[-1] if lines else "no output"))


def check_py_spy(py_spy: Path | None = None) -> Path:
    """py-spy's path, once it has read a Python process here; else ProfileError naming the fix."""
    py_spy = py_spy or py_spy_path()
    child = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert child.stdout is not None
        child.stdout.readline()  # the interpreter is up
        done = subprocess.run([str(py_spy), "dump", "--pid", str(child.pid)], capture_output=True, text=True,
                              timeout=60)
    finally:
        child.kill()
        child.wait()
    if done.returncode:
        raise ProfileError(_failure(done.stdout + done.stderr))
    return py_spy


def _tree(root_pid: int) -> list[int]:
    root = psutil.Process(root_pid)
    return [root_pid, *(p.pid for p in root.children(recursive=True))]


def _thread_times(pids: Iterable[int]) -> dict[int, ThreadCpu]:
    """Every thread's user and system seconds so far, by thread id."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                    name, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
                    user, system = int(rest[11]) / CLOCK_TICKS, int(rest[12]) / CLOCK_TICKS  # fields 14, 15
                    found[int(tid)] = ThreadCpu(pid, int(tid), name, user, system)
    return found


def _binaries(pids: Iterable[int]) -> set[str]:
    """The files the processes have mapped: executable, shared libraries (and some data files)."""
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
            found.update(parts[5] for parts in map(str.split, maps) if len(parts) >= 6 and parts[5].startswith("/"))
    return found


def _tracer(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return 0


@dataclass
class Recording:
    """What one profiled window collected."""

    name: str
    stacks: Counter[str]  # folded stack ("process…;thread…;frame;…;innermost") -> samples, native frames included
    threads: list[ThreadCpu]  # every thread of the server tree, CPU over the window
    python_stacks: Counter[str] | None = None  # the same window, Python frames only
    binaries: list[str] = field(default_factory=list)  # files the tree had mapped
    flamegraph: Path | None = None
    errors: int = 0  # native samples py-spy could not take (it cannot unwind through greenlets)

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())

    @property
    def dropped(self) -> float:
        """The share of native samples py-spy could not take."""
        return self.errors / (self.samples + self.errors) if self.errors else 0.0

    def cpu(self) -> PackageCpu:
        """The window's CPU by package: innermost and inclusive shares of user CPU, inclusive ones of system CPU.

        From the native recording alone, unless py-spy dropped more than 2% of its samples: then the
        Python-level split comes from the Python-only recording (``cpu_by_package``).
        """
        python = self.python_stacks if self.dropped > DROPPED else None
        return cpu_by_package(self.stacks, Packages.current(self.binaries), self.threads, python)

    def shares(self) -> dict[str, float]:
        """Package -> share of the window's user CPU by innermost frame (the shares sum to 1)."""
        return self.cpu().innermost


class _PySpy:
    """One ``py-spy record`` of a process tree, in folded stacks, until SIGINT."""

    def __init__(self, py_spy: Path, root_pid: int, folder: Path, label: str, options: list[str]) -> None:
        self.raw, self.log = folder / f"{label}.txt", folder / f"{label}.log"
        self.command = [str(py_spy), "record", "--pid", str(root_pid), "--subprocesses", "--threads",
                        "--full-filenames", "--format", "raw", "--output", str(self.raw), *options]
        self.proc: subprocess.Popen | None = None

    def start(self, cpus: set[int] | None) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         process_group=0, preexec_fn=preexec(cpus=cpus))

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_sampling(self, deadline: float) -> None:
        """Until py-spy says "Sampling process" (it has attached to at least one process of the tree)."""
        while "Sampling process" not in self.output():
            self.check(deadline, "start sampling")
            time.sleep(0.01)

    def check(self, deadline: float, what: str) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ProfileError(_failure(self.output()))
        if time.monotonic() > deadline:
            raise ProfileError(f"py-spy did not {what} in time: {self.output()[-300:]}")

    def stop(self, timeout: float) -> tuple[Counter[str], int]:
        """SIGINT: py-spy writes its stacks; return them and the samples it could not take."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProfileError(f"py-spy did not write its samples within {timeout:.0f}s of SIGINT") from None
        if not self.raw.is_file():
            raise ProfileError(_failure(self.output()))
        errors = re.search(r"Errors: (\d+)", self.output())
        return parse_folded(self.raw.read_text(errors="replace")), int(errors.group(1)) if errors else 0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Profiler:
    """py-spy recording every process of a server tree for the duration of a ``with`` block (the window).

    Two recordings run side by side: one with native frames (``--native``: it stops the process for each
    sample, to unwind its C stack), and one of Python frames only, for the samples the first drops in
    greenlets (``--nonblocking``: it reads the process while it runs, so the two do not get in each other's
    way).

    ``__enter__`` returns once both sample (py-spy attaches in the background, and with native unwinding
    that takes a moment); the window's thread CPU is read at the block's edges; ``stop`` makes py-spy write
    its stacks (on SIGINT) and returns them with the flame graph's path.
    """

    def __init__(self, root_pid: int, out_dir: Path, name: str, *, rate: int = RATE, cpus: set[int] | None = None,
                 py_spy: Path | None = None, timeout: float = 30.0) -> None:
        self.root_pid, self.out_dir, self.name = root_pid, Path(out_dir), name
        self.cpus, self.py_spy, self.timeout = cpus, py_spy, timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="insertbench-profile-")
        folder, self._spy = Path(self._tmp.name), self.py_spy or py_spy_path()
        self._python = _PySpy(self._spy, root_pid, folder, "python", ["--nonblocking", "--rate", str(rate)])
        self._native = _PySpy(self._spy, root_pid, folder, "native", ["--native", "--rate", str(rate)])
        self._before: dict[int, ThreadCpu] = {}
        self._after: dict[int, ThreadCpu] | None = None
        self._pids: list[int] = []
        self._binaries: set[str] = set()
        self._recording: Recording | None = None

    def __enter__(self) -> Profiler:
        deadline = time.monotonic() + self.timeout
        try:
            self._pids = _tree(self.root_pid)
            self._python.start(self.cpus)
            self._python.wait_sampling(deadline)
            self._native.start(self.cpus)
            self._native.wait_sampling(deadline)
            self._wait_native_stops(deadline)
            self._binaries = _binaries(self._pids)
            self._before = _thread_times(self._pids)
        except ProfileError:
            self._kill()
            check_py_spy(self._spy)  # the plainer reason, when py-spy may not attach here at all
            raise
        except BaseException:
            self._kill()
            raise
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.stop()
        else:
            self._kill()

    def stop(self) -> Recording:
        """End the window (if the block has not): py-spy writes its stacks; return them."""
        if self._recording is not None:
            return self._recording
        if self._native.proc is None:
            raise ProfileError("the profiler is not running: use Profiler as a context manager")
        self._after = _thread_times(self._pids)
        self._binaries |= _binaries(self._pids)
        try:
            stacks, errors = self._native.stop(self.timeout)
            python_stacks, _ = self._python.stop(self.timeout)
        finally:
            self._kill()
        self._recording = Recording(self.name, stacks, self._window_threads(), python_stacks, sorted(self._binaries),
                                    self._write_flamegraph(stacks, python_stacks), errors)
        return self._recording

    # ------------------------------------------------------------------ internals

    def _wait_native_stops(self, deadline: float) -> None:
        """Until every process of the tree has been stopped for a sample twice since py-spy said it samples.

        py-spy stops a process (ptrace) for each native sample, and once, longer, while it attaches to it.
        """
        stops, traced = Counter[int](), dict.fromkeys(self._pids, False)
        while min(stops[pid] for pid in self._pids) < 2:
            for pid in self._pids:
                now = _tracer(pid) != 0
                stops[pid] += now and not traced[pid]
                traced[pid] = now
            self._native.check(deadline, f"sample processes {[p for p in self._pids if stops[p] < 2]}")
            time.sleep(0.0005)

    def _window_threads(self) -> list[ThreadCpu]:
        assert self._after is not None
        owners = {pid: process_owner(pid) for pid in self._pids}
        threads = []
        for tid, end in sorted(self._after.items()):
            start = self._before.get(tid)
            user, system = (end.user - start.user, end.system - start.system) if start else (end.user, end.system)
            threads.append(ThreadCpu(end.pid, tid, end.name, user, system, owners.get(end.pid, NATIVE)))
        return threads

    def _write_flamegraph(self, stacks: Mapping[str, int], python_stacks: Mapping[str, int]) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{self.name}.speedscope.json"
        path.write_text(json.dumps(speedscope(stacks, self.name, python_stacks), separators=(",", ":")) + "\n")
        return path

    def _kill(self) -> None:
        self._native.kill()
        self._python.kill()
        self._tmp.cleanup()


def profile_name(cell: Cell) -> str:
    """A cell's profile files: ``<framework>-<server>-<db>-<inserts per request>``."""
    return f"{cell.framework}-{cell.server}-{cell.db}-{cell.inserts_per_request}"


class ProfileProbe:
    """A profiled window for the sampler: py-spy from ``start`` to ``stop``; any failure is recorded, not raised.

    ``stop`` returns what the sample keeps: ``profile_shares`` (package -> share of user CPU, by innermost
    frame), ``profile_inclusive`` (package -> share of user CPU in samples with a frame of it on the stack),
    ``profile_inclusive_system`` (package -> share of system CPU in system calls made under it; older runs
    have neither), ``profile_flamegraph`` (path relative to the run's folder), ``profile_samples`` (native ones),
    ``profile_dropped`` (the share of native samples py-spy could not take), ``profile_unsampled`` (user CPU
    seconds of threads py-spy cannot see, by owner); or ``profile_error``, one line, when py-spy could not
    profile.
    """

    def __init__(self, root_pid: int, cell: Cell, run_dir: Path, *, rate: int = RATE, cpus: set[int] | None = None):
        self.run_dir = Path(run_dir)
        self.profiler = Profiler(root_pid, self.run_dir / "profiles", profile_name(cell), rate=rate, cpus=cpus)
        self.error: str | None = None

    def prepare(self) -> None:
        """Nothing before the warm-up: py-spy attaches right before the window."""

    def start(self) -> None:
        try:
            self.profiler.__enter__()
        except (ProfileError, OSError, psutil.Error) as exc:
            self.error = str(exc)

    def stop(self) -> dict[str, Any]:
        if self.error:
            return {"profile_error": self.error}
        try:
            recording = self.profiler.stop()
            cpu = recording.cpu()
        except (ProfileError, OSError) as exc:
            return {"profile_error": str(exc)}
        recorded = (recording.stacks, recording.python_stacks or {})
        seen = {tid for stacks in recorded for tid, _ in thread_samples(stacks)}
        unsampled = Counter[str]()
        for t in recording.threads:
            if t.tid not in seen and t.user > 0:
                unsampled[t.owner] += t.user
        flamegraph = recording.flamegraph.relative_to(self.run_dir).as_posix() if recording.flamegraph else None
        return {"profile_shares": cpu.innermost, "profile_inclusive": cpu.inclusive,
                "profile_inclusive_system": cpu.inclusive_system, "profile_flamegraph": flamegraph,
                "profile_samples": recording.samples, "profile_dropped": round(recording.dropped, 4),
                "profile_unsampled": dict(unsampled)}


# ---------------------------------------------------------------------------- flame graph


def speedscope(stacks: Mapping[str, int], name: str, python_stacks: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The stacks as a speedscope file (https://www.speedscope.app): a profile per sampled thread, busiest
    first, then the same for the Python-only recording, if given."""
    frames: dict[str, int] = {}
    profiles = []
    for prefix, recorded in (("", stacks), ("Python frames only: ", python_stacks or {})):
        threads: dict[tuple, tuple[str, list[list[int]], list[int]]] = {}
        for stack, count in sorted(recorded.items()):
            parts = split_stack(stack)
            title = f"{prefix}{parts.thread or 'thread'} {parts.tid} · pid {parts.pid} {parts.command[:80]}"
            _, samples, weights = threads.setdefault((parts.pid, parts.tid), (title.strip(), [], []))
            samples.append([frames.setdefault(frame, len(frames)) for frame in parts.frames])
            weights.append(count)
        profiles += [{"type": "sampled", "name": f"{title} ({sum(weights)} samples)", "unit": "none",
                      "startValue": 0, "endValue": sum(weights), "samples": samples, "weights": weights}
                     for title, samples, weights in sorted(threads.values(), key=lambda t: -sum(t[2]))]
    shared = []
    for frame in frames:
        function, file, line = split_frame(frame)
        shared.append({"name": function, **({"file": file} if file else {}), **({"line": line} if line else {})})
    return {"$schema": "https://www.speedscope.app/file-format-schema.json", "name": name,
            "exporter": "insertbench (py-spy record --format raw)", "activeProfileIndex": 0,
            "shared": {"frames": shared}, "profiles": profiles}
