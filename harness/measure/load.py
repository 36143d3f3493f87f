"""Drive one server with insertbench's load generator and collect what it saw.

The load generator is a small C program (``loadgen.c`` beside this file), not a Python client, because
its own CPU cost must stay far below the cheapest server it loads: a bare ASGI app answers in ~25 µs of
CPU, and the generator, pinned to another core, spends about 10 µs per request (mostly the kernel's
loopback TCP). It also does what no off-the-shelf tool does together: a distinct text in every request
(``text_for`` below is the one Python definition of those texts), every returned id recorded so the
harness can check each row in the database, and quiescent window boundaries: it drains every request in
flight before saying ``WARM`` and ``DONE``, so CPU counters read at those points belong to one window.

``build_loadgen`` compiles the source once per content hash into the user's cache; ``LoadGenerator``
runs it in its own process group as a context manager::

    with LoadGenerator(spec, workdir, cpus={0}) as load:
        load.wait_warm()
        before = snapshot()
        load.go()
        result = load.wait_done()
        after = snapshot()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from harness.measure.process import describe_exit

SOURCE = Path(__file__).with_name("loadgen.c")
NO_COMPILER = (
    "insertbench builds its load generator from C: install a C compiler "
    "(apt-get install gcc, or xcode-select --install) or point $CC at one"
)


SECONDS_MAX = 1e6  # loadgen.c's bound on --duration, --warmup and --timeout
RATE_MAX = 1e7
REQUESTS_MAX = 100_000_000


class LoadError(RuntimeError):
    """The load generator could not be built, refused its arguments, died or stalled."""


def _check_number(name: str, value: object, unit: str, zero_ok: bool, maximum: float) -> None:
    """Refuse what loadgen.c refuses: anything but a finite int or float above 0 (or 0, when `zero_ok`)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not (0 < value <= maximum or zero_ok and value == 0):
        bound = "from 0" if zero_ok else "above 0"
        raise LoadError(f"LoadSpec.{name} must be a finite number {bound} up to {maximum:g} ({unit}), got {value!r}")


def text_for(prefix: str, seq: int, j: int | None = None) -> str:
    """The text request `seq` sends: `<prefix>-<seq>`, or its `j`-th text in a bulk request."""
    return f"{prefix}-{seq}" if j is None else f"{prefix}-{seq}-{j}"


def build_loadgen() -> Path:
    """Compile loadgen.c (cached by the hash of its source) and return the binary's path."""
    source = SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "insertbench"
    binary = cache / f"loadgen-{hashlib.sha256(source).hexdigest()[:12]}"
    if binary.exists():
        return binary
    cc = shlex.split(os.environ.get("CC") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        raise LoadError(f"{NO_COMPILER} (no compiler {' '.join(cc) or 'cc'!r} found)")
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f"{binary.name}.", suffix=".tmp")
    os.close(fd)
    try:
        done = subprocess.run([*cc, "-O2", "-std=gnu11", "-x", "c", "-o", tmp, "-"], input=source, capture_output=True)
        if done.returncode:
            raise LoadError(f"compiling {SOURCE} with {' '.join(cc)} failed:\n{done.stderr.decode()}")
        os.replace(tmp, binary)  # atomic: a concurrent build sees the old name or the whole binary
    finally:
        Path(tmp).unlink(missing_ok=True)
    return binary


@dataclass(frozen=True)
class LoadSpec:
    """What to send: see loadgen.c for the meaning of each field (the CLI flags have the same names).

    A number the binary would refuse (NaN, infinite, negative, zero where it must not be) raises LoadError here,
    before anything starts."""

    host: str
    port: int
    method: str  # POST or GET
    path: str
    body: str  # text, texts, query, or template (the request in the file ``template``)
    inserts: int  # texts per request for body="texts"
    concurrency: int
    rate: float  # requests/s; 0 = closed loop
    warmup: float  # seconds
    duration: float  # seconds; not the end of the measured window when requests > 0
    prefix: str  # [A-Za-z0-9_-]
    sum_field: str | None = None
    timeout: float = 10.0  # seconds, per request
    requests: int = 0  # > 0: the measured window is exactly this many requests
    template: str | None = None  # body="template": a file holding the request, "{n}" becoming n_base + its number
    n_base: int = 0

    def __post_init__(self) -> None:
        if type(self.requests) is not int or not 0 <= self.requests <= REQUESTS_MAX:
            raise LoadError(f"LoadSpec.requests must be a whole number from 0 to {REQUESTS_MAX}, got {self.requests!r}")
        _check_number("rate", self.rate, "requests/s; 0: a closed loop", True, RATE_MAX)
        _check_number("warmup", self.warmup, "seconds", True, SECONDS_MAX)
        _check_number("timeout", self.timeout, "seconds", False, SECONDS_MAX)
        _check_number("duration", self.duration, "seconds; 0 only with requests > 0", self.requests > 0, SECONDS_MAX)

    def argv(self, binary: Path, out: Path) -> list[str]:
        """The command line that runs `binary` with this spec, writing its acks to `out`."""
        flags = {
            "host": self.host, "port": self.port, "method": self.method, "path": self.path,
            "body": self.body, "inserts": self.inserts, "concurrency": self.concurrency,
            "rate": float(self.rate), "warmup": float(self.warmup), "duration": float(self.duration),
            "prefix": self.prefix, "timeout": float(self.timeout), "out": out, "sum-field": self.sum_field,
            "requests": self.requests if self.requests > 0 else None,
            "template": self.template, "n-base": self.n_base if self.template else None,
            "error-out": f"{out}.error" if self.template else None,
        }  # fmt: skip
        return [str(binary)] + [
            arg for name, value in flags.items() if value is not None for arg in (f"--{name}", str(value))
        ]


@dataclass(frozen=True, slots=True)
class Ack:
    """One completed request: status 0 means connection error, timeout or unparseable response."""

    seq: int
    phase: str  # "w" (warm-up) or "m" (measured)
    status: int
    latency_us: int
    ids: tuple[int, ...]


@dataclass
class LoadResult:
    summary: dict  # the generator's JSON summary (measured window only)
    acks: list[Ack]  # every completed request, warm-up and measured, in completion order
    first_error: str | None = None  # with a template: "<status> <body>" of the first answer that was not 2xx

    @property
    def measured(self) -> list[Ack]:
        return [ack for ack in self.acks if ack.phase == "m"]


class LoadGenerator:
    """One run of the load generator: start → wait_warm → go → wait_done; the exit kills it, and so does the
    death of this process (--parent: PR_SET_PDEATHSIG, so a SIGKILLed harness leaves no generator behind)."""

    def __init__(self, spec: LoadSpec, workdir: Path, cpus: set[int] | None = None):
        self.spec = spec
        self.workdir = Path(workdir)
        self.cpus = cpus
        self.out_path = self.workdir / f"loadgen-{spec.prefix}.acks"
        self.stderr_path = self.workdir / f"loadgen-{spec.prefix}.stderr"
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""

    def __enter__(self) -> LoadGenerator:
        binary = build_loadgen()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "wb") as stderr:
            self._proc = subprocess.Popen(
                [*self.spec.argv(binary, self.out_path), "--parent", str(os.getpid())],  # it dies with us
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                process_group=0,  # its own group, so __exit__ can kill it whole
            )
        try:
            if self.cpus:
                os.sched_setaffinity(self._proc.pid, self.cpus)
        except BaseException:
            self._kill()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._kill()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise LoadError("the load generator is not running: use LoadGenerator as a context manager")
        return self._proc.pid

    def wait_warm(self, timeout: float | None = None) -> None:
        """Block until the warm-up is over and drained (nothing in flight)."""
        if timeout is None:
            timeout = self.spec.warmup + self.spec.timeout + 30
        self._expect("WARM", time.monotonic() + timeout)

    def go(self) -> None:
        """Start the measured window."""
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(b"GO\n")
            stdin.flush()
        except BrokenPipeError:
            self._fail("exited before GO")

    def wait_done(self, timeout: float | None = None) -> LoadResult:
        """Block until the measured window is over and drained; return its summary and every ack."""
        if timeout is None:
            timeout = self.spec.duration + self.spec.timeout + 60
        deadline = time.monotonic() + timeout
        self._expect("DONE", deadline)
        line = self._read_line(deadline, "its summary")
        try:
            summary = json.loads(line)
        except json.JSONDecodeError:
            self._fail(f"printed an unreadable summary {line!r}")
        try:
            code = self._process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._fail("did not exit after its summary")
        if code:
            self._fail(describe_exit(code))
        return LoadResult(summary, read_acks(self.out_path), _first_error(Path(f"{self.out_path}.error")))

    # ------------------------------------------------------------------ internals

    @property
    def _process(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise LoadError("the load generator is not running: use LoadGenerator as a context manager")
        return self._proc

    def _expect(self, word: str, deadline: float) -> None:
        line = self._read_line(deadline, word)
        if line != word:
            self._fail(f"printed {line!r} where {word} was expected")

    def _read_line(self, deadline: float, what: str) -> str:
        stdout = self._process.stdout
        assert stdout is not None
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([stdout], [], [], remaining)[0]:
                self._fail(f"sent no {what} in time")
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                try:
                    code = self._process.wait(5)
                except subprocess.TimeoutExpired:
                    code = None
                self._fail(f"{describe_exit(code) if code is not None else 'closed its output'} before {what}")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def _fail(self, what: str) -> NoReturn:
        self._kill()
        try:
            tail = self.stderr_path.read_text(errors="replace")[-2000:].strip()
        except OSError:
            tail = ""
        raise LoadError(f"load generator (pid {self.pid}) {what}" + (f": {tail}" if tail else ""))

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # process_group=0: its group id is its pid
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()


def read_acks(path: Path) -> list[Ack]:
    """Parse the generator's out file: `<seq> <w|m> <status> <latency_us> <ids|->` per line."""
    acks = []
    with open(path) as lines:
        for line in lines:
            seq, phase, status, latency_us, ids = line.split()
            parsed = () if ids == "-" else tuple(int(i) for i in ids.split(","))
            acks.append(Ack(int(seq), phase, int(status), int(latency_us), parsed))
    return acks


def _first_error(path: Path) -> str | None:
    """The first non-2xx answer loadgen kept (--error-out): its status and body on one line."""
    try:
        status, _, body = path.read_text(errors="replace").partition("\n")
    except FileNotFoundError:
        return None
    return f"{status} {' '.join(body.split())}".strip()
