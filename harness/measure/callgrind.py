"""Instructions per request: the server under valgrind's callgrind, counting only a window of requests.

CPU time on a shared 2-core VM moves ±15% between windows of the same cell; the number of instructions
the server executes for the same requests repeats within a fraction of a percent. So a cell can also be
measured in instructions: the server runs under ``valgrind --tool=callgrind`` with instrumentation off
(``--instr-atstart=no``: start-up and warm-up run at valgrind's uninstrumented speed, and nothing is
counted), is switched on with ``callgrind_control -i on`` once the load generator's warm-up has drained,
switched off once the measured window has drained, and dumped. The window's edges are quiescent, as for
the CPU figures, so the count belongs to the window's requests and nothing else.

Every process of the server tree counts: callgrind follows forks, ``--trace-children=yes`` follows
execs (uvicorn's and granian's worker processes), and each process's dump covers all its threads
(granian's Rust threads too). Its ``totals:`` line is the instructions (``Ir``) it executed since the
counters were zeroed; the sum over the tree is the window's count. It is user space only: the kernel's
share (system calls, loopback TCP) is not in it and stays in the CPU figures.

``callgrind_control`` reaches a process through ``vgdb``; a process blocked in a system call (a server
idle in ``epoll_wait``) is woken with ``ptrace``, which needs root or ``kernel.yama.ptrace_scope=0``.
Every valgrind of a server uses its own ``--vgdb-prefix`` in the server's folder, so the controls reach
that server's processes only, never another valgrind on the machine.

    with callgrind_server(app, "uvicorn", db="none", dsn=dsn, workdir=tmp) as cg:
        with LoadGenerator(spec, tmp) as load:      # spec.requests = N
            load.wait_warm()
            cg.start()
            load.go()
            load.wait_done()
            counted = cg.stop()                    # Instructions(total, by_process, processes)
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.errors import UsageError
from harness.measure.apps import App
from harness.measure.servers import Server, ServerError, serve

INSTALL = "apt-get install valgrind (Debian/Ubuntu) or dnf install valgrind (Fedora/RHEL)"

# Uninstrumented, a server under valgrind is healthy in 2-6 s on a 2-core VM (10 s when the machine is busy).
HEALTH_TIMEOUT = 120.0
CONTROL_TIMEOUT = 60.0  # one callgrind_control call, every process of the tree
GC_FUNCTION = "gc_collect_main"  # CPython's cyclic collector, every generation (3.8-3.12)

# --instr-atstart=no: start-up and warm-up run uninstrumented, much faster, and count nothing.
# --trace-children=yes: workers started by exec (multiprocessing's spawn) run under callgrind too.
# Only Ir is wanted, so no cache or branch simulation (each would multiply the slowdown), no jump
# collection, no per-instruction dump and no system-call time: callgrind's defaults, written out so that
# a changed default cannot slow the count down. One dump per process, all its threads summed; names
# compressed, so a dump is a few hundred KB. (--dump-line=no would be smaller still, but valgrind 3.19
# ignores it.) -q keeps valgrind's banners out of the server's log; its errors still go there.
OPTIONS = (
    "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes", "-q",
    "--cache-sim=no", "--branch-sim=no", "--collect-jumps=no", "--dump-instr=no", "--collect-systime=no",
    "--separate-threads=no", "--compress-strings=yes", "--compress-pos=yes",
)  # fmt: skip


class ValgrindMissing(UsageError):
    """valgrind or callgrind_control is not installed; the message says how to install it."""


class CallgrindError(ServerError):
    """The server would not run or be controlled under callgrind; the message carries its output."""


@dataclass(frozen=True)
class Instructions:
    """What one window counted: instructions (Ir) in all, and per process of the server tree.

    ``gc`` is the part spent in CPython's cyclic garbage collector (``gc_collect_main`` and all it
    calls). A full collection walks the whole heap in one lump (~14M instructions for the bare app
    under granian, ~30M with SQLAlchemy) every few hundred to few thousand requests, so whether a
    window holds one moves its count by up to 5-10%; ``total - gc`` repeats within a fraction of a
    percent. ``gc`` is 0 when the collector did not run, and also when the interpreter's static
    functions have no symbols (a stripped build, e.g. Debian's /usr/bin/python3.11): then the
    collector's cost is in ``total`` only.
    """

    total: int
    by_process: dict[int, int]
    processes: int
    gc: int = 0

    @property
    def without_gc(self) -> int:
        return self.total - self.gc


def require_valgrind() -> None:
    """Raise ValgrindMissing unless valgrind and callgrind_control are on PATH."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        raise ValgrindMissing(f"instruction counts need {' and '.join(missing)}, not found on PATH: {INSTALL}")


def valgrind_argv(folder: Path) -> list[str]:
    """The command prefix that runs a server under callgrind, its dumps and vgdb pipes in ``folder``."""
    return ["valgrind", *OPTIONS, f"--callgrind-out-file={folder}/callgrind.%p", f"--vgdb-prefix={folder}/vgdb"]


def read_totals(dump: Path) -> int:
    """The instructions one dump counted: its ``totals:`` line, the sum of every cost in the dump.

    Not its ``summary:`` line: valgrind 3.19 writes ``summary: 0`` when instrumentation started off.
    """
    with open(dump) as lines:
        for line in lines:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise CallgrindError(f"{dump} has no totals: line")


def read_inclusive(dump: Path, name: str) -> int | None:
    """Instructions in function ``name`` and everything it called, or None if the dump never names it.

    In a dump, every cost line after ``fn=`` belongs to that function: its own cost, or after a ``calls=``
    line the inclusive cost of that call. Names are compressed: ``fn=(7) name`` once, then ``fn=(7)``.
    A recursive activation is named ``name'2`` and is inside the outer one's calls, so it is not added.
    """
    names: dict[str, str] = {}
    total, seen, inside = 0, False, False
    with open(dump) as lines:
        for line in lines:
            if line[:1] and line[0] in "0123456789+-*":  # a cost line: "<position> <Ir>"
                fields = line.split()
                if inside and len(fields) > 1:
                    total += int(fields[-1])
            elif line.startswith(("fn=", "cfn=")):
                key, _, rest = line.partition("=")[2].strip().partition(" ")
                if rest:
                    names[key] = rest
                if line.startswith("fn="):
                    inside = names.get(key, key) == name
                    seen = seen or inside
    return total if seen else None


class CallgrindServer:
    """A server running under callgrind: ``start`` counting, ``stop`` and read what was counted."""

    def __init__(self, server: Server, folder: Path):
        self.server = server
        self.folder = folder
        self._pids: list[int] = []

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def url(self) -> str:
        return self.server.url

    def alive(self) -> bool:
        return self.server.alive()

    def stderr_tail(self, lines: int = 12, chars: int = 1500) -> str:
        return self.server.stderr_tail(lines, chars)

    def death(self, phase: str, since: float | None = None) -> str:
        return self.server.death(phase, since)

    def warm(self) -> None:
        """Switch instrumentation on before the warm-up, so the warm-up runs at the window's (slow) pace.

        A server under instrumentation answers ten times slower than without; a warm-up at the faster pace
        overlaps fewer requests, so its connection pool may never grow to what the window then needs, and
        the window would count new database logins (~28M instructions each). Warmed up instrumented, the
        window finds every connection it needs; ``start()`` zeroes what the warm-up counted.
        """
        self._control("--instr=on", self.tree())

    def start(self) -> None:
        """Zero the counters and switch instrumentation on in every process of the server tree."""
        self._pids = self.tree()
        self._control("--zero", self._pids)
        self._control("--instr=on", self._pids)

    def stop(self) -> Instructions:
        """Switch instrumentation off, dump every process, and add up what the dumps counted."""
        if not self._pids:
            raise CallgrindError("stop() without start()")
        pids, self._pids = self._pids, []
        self._control("--instr=off", pids)
        before = {pid: self._dumps(pid) for pid in pids}
        self._control("--dump", pids)
        dumps = {pid: self._new_dump(pid, before[pid]) for pid in pids}
        counts = {pid: read_totals(dump) for pid, dump in dumps.items()}
        gc = sum(read_inclusive(dump, GC_FUNCTION) or 0 for dump in dumps.values())
        return Instructions(total=sum(counts.values()), by_process=counts, processes=len(counts), gc=gc)

    def tree(self) -> list[int]:
        """The server's pid and all its descendants' (each runs under valgrind)."""
        if not self.alive():
            raise CallgrindError(f"server exited with code {self.server.proc.returncode}: {self.stderr_tail()}")
        with contextlib.suppress(psutil.Error):
            return [self.pid, *(child.pid for child in psutil.Process(self.pid).children(recursive=True))]
        return [self.pid]

    def _control(self, action: str, pids: list[int], tries: int = 3) -> None:
        argv = ["callgrind_control", f"--vgdb-prefix={self.folder}/vgdb", action, *map(str, pids)]
        for attempt in range(tries):
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=CONTROL_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise self._error(f"callgrind_control {action} did not answer within {CONTROL_TIMEOUT:.0f}s (vgdb "
                                  "reaches a process blocked in a system call with ptrace: run as root or set "
                                  "kernel.yama.ptrace_scope=0)") from None
            replies = done.stdout.count("\n  OK.")
            # On a loaded machine vgdb sometimes lists no task at all ("not detected"); nothing was done to any
            # process then, so asking again is safe. A partial answer is not retried: it would act twice.
            if replies or "not detected" not in done.stdout + done.stderr or attempt == tries - 1:
                break
            time.sleep(0.5)
        if done.returncode or replies != len(pids):
            said = (done.stdout + done.stderr).strip()
            raise self._error(f"callgrind_control {action} answered {replies} of {len(pids)} processes: {said}")

    def _dumps(self, pid: int) -> dict[Path, int]:
        """This process's dump files, by part number."""
        found = {}
        for path in self.folder.glob(f"callgrind.{pid}.*"):
            part = path.name.rsplit(".", 1)[1]
            if part.isdigit():
                found[path] = int(part)
        return found

    def _new_dump(self, pid: int, before: dict[Path, int]) -> Path:
        new = {path: part for path, part in self._dumps(pid).items() if path not in before}
        if not new:
            raise self._error(f"process {pid} wrote no dump in {self.folder}")
        return max(new, key=new.__getitem__)

    def _error(self, what: str) -> CallgrindError:
        tail = self.stderr_tail()
        return CallgrindError(what + (f"; server output: {tail}" if tail else ""))


@contextlib.contextmanager
def callgrind_server(app: App, server: str, *, db: str, dsn: str, workdir: Path, cpus: set[int] | None = None,
                     workers: int = 1, pool_size: int | None = None, timeout: float = HEALTH_TIMEOUT,
                     python: str | None = None, knob: str = "") -> Iterator[CallgrindServer]:
    """Run ``app`` under ``server`` under callgrind, counting nothing until ``start``; healthy before it yields.

    The dumps stay in a fresh folder under ``workdir`` (``callgrind_annotate`` reads them).
    """
    require_valgrind()
    Path(workdir).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"callgrind-{app.name}-{server}-{db}-", dir=workdir))
    started = False
    try:
        with serve(app, server, db=db, dsn=dsn, cpus=cpus, workers=workers, pool_size=pool_size, timeout=timeout,
                   wrap=valgrind_argv(folder), python=python, knob=knob) as running:  # fmt: skip
            started = True
            yield CallgrindServer(running, folder)
    except ServerError as exc:
        if started or isinstance(exc, CallgrindError):
            raise
        raise CallgrindError(f"{app.name} under {server} under valgrind: {exc}") from exc
