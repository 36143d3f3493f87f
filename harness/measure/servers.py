"""ASGI servers as data, and one context manager that runs an app under one of them.

``harness.axes.SERVERS`` holds each server's command template; adding a server or a flag touches nothing
else (no app, no harness code). Every server binds 127.0.0.1 on a free port, runs in a process group of
its own (pinned to the given cores, so its workers are too), is health-checked with ``GET /health``
before any load, and is always stopped, whole group, when the ``with`` block ends. A server that dies says how
(``describe_exit``: a signal's name, and what usually sends it) and when (a thread times its end), with the last
lines it wrote; one that is never ready says so after ``timeout`` seconds (``--ready-timeout``).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.axes import SERVERS
from harness.measure import knobs
from harness.measure.apps import ROOT, App
from harness.measure.postgres import scrub
from harness.measure.process import describe_exit, free_port, kill_group, preexec, watch_exit

READY_TIMEOUT = 30.0  # seconds a server may take to answer its readiness check (``--ready-timeout``)


class ServerError(RuntimeError):
    """The server did not come up, or died; the message carries the tail of its stderr."""


@dataclass
class Server:
    """A running server: where it listens and how to read what it said."""

    proc: subprocess.Popen
    port: int
    log: Path
    ended: Callable[[], float | None] = field(default=lambda: None, repr=False)  # when it died (time.monotonic())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = 12, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            text = "\n".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
            return scrub(text)[-chars:]  # an app's error may quote BENCH_DSN: no password is stored or printed
        return ""

    def death(self, phase: str, since: float | None = None) -> str:
        """How and when the server died, with its last lines: "server was killed by signal 9 (SIGKILL: …) after
        1.2 s of the measured window; its last lines: …". ``since`` is when ``phase`` began (time.monotonic())."""
        ended = self.ended()
        when = (f"after {ended - since:.1f} s of the {phase}" if ended is not None and since is not None
                and ended >= since else f"during the {phase}")
        tail = self.stderr_tail()
        return f"server {describe_exit(self.proc.returncode)} {when}" + (f"; its last lines: {tail}" if tail else "")


def command(server: str, app: App, port: int, workers: int = 1, python: str | None = None) -> list[str]:
    """The command line that serves ``app`` with ``server`` (on ``python``, default the harness's own)."""
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}; valid: {', '.join(SERVERS)}")
    python = python or (app.own.python if app.own else None)
    values = {"python": python or sys.executable, "module": app.module, "attr": app.attr, "port": port,
              "workers": workers}
    return [part.format(**values) for part in SERVERS[server].command]


def _environment(app: App, db: str, dsn: str, pool_size: int | None, knob_env: dict[str, str],
                 roots: tuple[Path, ...] = ()) -> dict[str, str]:
    if app.own:  # a user's app gets its own import root and the variables it was given, no BENCH_*
        env = app.own.environment(dsn) | knob_env
    else:
        env = dict(os.environ, BENCH_DB=db, BENCH_DSN=dsn, PYTHONPATH=os.pathsep.join(
            dict.fromkeys([str(app.root), str(ROOT)])), PYTHONUNBUFFERED="1")
        if pool_size is not None:
            env["BENCH_POOL_SIZE"] = str(pool_size)
        env |= knob_env
    if roots:  # a knob's module (the original app edited, the collector's wrapper) comes first
        env["PYTHONPATH"] = os.pathsep.join([*map(str, roots), env["PYTHONPATH"]])
    return env


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _wait_healthy(server: Server, timeout: float, healthy: Callable[[int], bool] = _healthy,
                  what: str = "GET /health did not answer 200", give_up: Callable[[], str | None] = lambda: None,
                  ) -> None:
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if not server.alive():
            raise ServerError(server.death("startup"))
        if healthy(server.port):
            return
        if reason := give_up():
            raise ServerError(f"server not ready: {reason}")
        time.sleep(0.05)
    tail = server.stderr_tail()
    raise ServerError(f"server not ready after {timeout:g} s: {what} (--ready-timeout SECONDS waits longer)"
                      + (f"; its last lines: {tail}" if tail else ""))


@contextlib.contextmanager
def serve(app: App, server: str, *, db: str, dsn: str, cpus: set[int] | None = None, workers: int = 1,
          pool_size: int | None = None, timeout: float = READY_TIMEOUT, wrap: Sequence[str] = (), knob: str = "",
          python: str | None = None, give_up: Callable[[], str | None] = lambda: None) -> Iterator[Server]:
    """Run ``app`` under ``server`` on 127.0.0.1 until the block ends; health-checked before it yields.

    ``wrap`` is a command prefix the server runs under (valgrind's argv, say); ``timeout`` bounds the wait
    for ``GET /health``, which such a prefix can make much longer, and ``give_up`` ends it early when it says
    why (the database is gone). ``python`` is the interpreter that runs the server (default: the harness's own);
    ``knob`` the changes (``axes.KNOBS``) applied (``knobs.apply``).
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="insertbench-server-") as tmp:
        log = Path(tmp, "stderr.log")
        served, knob_env, roots = knobs.apply(app, knob, Path(tmp, "knob"))
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                [*wrap, *command(server, served, port, workers, python)], cwd=app.own.app_dir if app.own else ROOT,
                env=_environment(app, db, dsn, pool_size, knob_env, roots),
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=preexec(cpus=cpus),
            )
        running = Server(proc=proc, port=port, log=log, ended=watch_exit(proc.pid))
        try:
            if app.own:
                _wait_healthy(running, timeout, app.own.healthy, app.own.health_label, give_up)
            else:
                _wait_healthy(running, timeout, give_up=give_up)
            yield running
        finally:
            kill_group(proc)
