"""One sample of one cell: a fresh server, warm-up, one measured window, verification.

The window's edges are quiescent: the load generator drains every in-flight request before it says
WARM and before it says DONE, and the CPU and database counters are read only then. So the Δs divide
cleanly by what the window did: rows counted in the database, requests answered.

Three kinds of window share this path. A ``cpu`` window is the matrix's sample. An ``instructions``
window runs the server under callgrind with instrumentation switched on only between WARM and DONE, for
a fixed number of requests (``callgrind``). A ``profile`` window has a sampling profiler attached to
the server tree from outside for its duration (``profile``); its CPU figures carry the profiler's cost,
which is how that cost is measured.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.axes import knob_names
from harness.measure.apps import App
from harness.measure.counters import (
    Cpu,
    DbDelta,
    DbSnapshot,
    db_snapshot,
    machine_record,
    machine_ticks,
    rows_since,
    tree_cpu,
    tree_rss,
)
from harness.measure.load import LoadError, LoadGenerator, LoadResult, LoadSpec
from harness.measure.own import table_counts, table_delta
from harness.measure.postgres import Database
from harness.measure.pythons import pinned_label
from harness.measure.servers import READY_TIMEOUT, ServerError, serve
from harness.measure.verify import verify
from harness.model import Cell, Sample

SEED_FIELD = "cpu_duration"  # the original app's own in-handler process_time() figure, in seconds


class SampleFailed(Exception):
    """The cell could not be measured; the message is the reason recorded for it."""


@dataclass
class Context:
    """What every sample of a run shares."""

    database: Database
    apps: dict[str, App]
    options: dict
    server_cpus: set[int] | None
    load_cpus: set[int] | None
    workdir: Path
    tag: str
    run_dir: Path | None = None  # where a profile window writes its flame graph
    pythons: dict[str, str] = field(default_factory=dict)  # a cell's python label → the executable that serves

    def python(self, cell: Cell) -> str | None:
        pinned = [pinned_label(cell, n) for n in knob_names(cell.knob) if pinned_label(cell, n) in self.pythons]
        if pinned:  # a knob's package versions: its own virtualenv
            return self.pythons[pinned[0]]
        return self.pythons.get(cell.python) if cell.python else None


class Probe:
    """What a window does at its edges beyond counting CPU: nothing for a plain CPU sample."""

    def prepare(self) -> None:
        """Before the load generator starts its warm-up."""

    def start(self) -> None:
        """Right before the measured window (the server is warm and idle)."""

    def stop(self) -> dict[str, Any]:
        """Right after it (drained): what to record on the sample."""
        return {}


def _load_spec(app: App, cell: Cell, port: int, options: dict, prefix: str, kind: str) -> LoadSpec:
    """What the load generator sends; a callgrind window sends a fixed number of requests, at its own concurrency."""
    counted = kind == "instructions"
    method, path = app.endpoints[cell.shape]
    if method == "GET" and cell.inserts_per_request > 1:  # ?n=N&text=T writes T-0 … T-(N-1)
        body, path = "query", f"{path}{'&' if '?' in path else '?'}n={cell.inserts_per_request}"
    elif method == "GET":
        body = "query"
    else:
        body = "texts" if cell.inserts_per_request > 1 else "text"
    return LoadSpec(host="127.0.0.1", port=port, method=method, path=path, body=body,
                    inserts=cell.inserts_per_request,
                    concurrency=options["instruction_concurrency"] if counted else options["concurrency"],
                    rate=0 if counted else options.get("rate") or 0,
                    warmup=options["instruction_warmup"] if counted else options["warmup"],
                    duration=options.get("profile_duration", options["duration"]) if kind == "profile"
                    else options["duration"], prefix=prefix, sum_field=SEED_FIELD,
                    requests=options["instruction_requests"] if counted else 0)


def _check_alive(server: Any, phase: str, since: float) -> None:
    if not server.alive():
        raise SampleFailed(server.death(phase, since))


@contextlib.contextmanager
def _with_server_lines(server: Any) -> Iterator[None]:
    """A load generator that fails (dies, stalls) fails the sample, with the server's last lines: they may say why."""
    try:
        yield
    except LoadError as exc:
        tail = server.stderr_tail()
        raise SampleFailed(f"{exc}" + (f"; the server's last lines: {tail}" if tail else "")) from None


def serving(cell: Cell, ctx: Context) -> contextlib.AbstractContextManager[Any]:
    """The cell's server, as every window (and a soak) starts it: its cores, workers, interpreter and knob, ready
    within --ready-timeout, its wait given up when the database is gone."""
    return serve(ctx.apps[cell.framework], cell.server, db=cell.db, dsn=ctx.database.dsn, cpus=ctx.server_cpus,
                 workers=ctx.options["workers"], python=ctx.python(cell), knob=cell.knob,
                 timeout=ctx.options.get("ready_timeout") or READY_TIMEOUT,
                 give_up=lambda: ctx.database.lost(probe=False))


@contextlib.contextmanager
def _server_and_probe(cell: Cell, kind: str, ctx: Context, running: Any = None) -> Iterator[tuple[Any, Probe]]:
    """The server for one window (``running``, a soak's, if given), and what its window does at its edges."""
    db, opts, app = ctx.database, ctx.options, ctx.apps[cell.framework]
    if running is not None:
        yield running, Probe()
        return
    if kind == "instructions":
        from harness.measure.callgrind import callgrind_server

        with callgrind_server(app, cell.server, db=cell.db, dsn=db.dsn, cpus=ctx.server_cpus,
                              workers=opts["workers"], workdir=ctx.workdir, python=ctx.python(cell),
                              knob=cell.knob) as cg:
            yield cg, _CallgrindProbe(cg)
        return
    with serving(cell, ctx) as server:
        if kind == "profile":
            from harness.measure.profile import ProfileProbe

            yield server, ProfileProbe(server.pid, cell, ctx.run_dir or ctx.workdir, cpus=ctx.load_cpus)
        else:
            yield server, Probe()


class _CallgrindProbe(Probe):
    def __init__(self, cg: Any) -> None:
        self.cg = cg

    def prepare(self) -> None:
        self.cg.warm()

    def start(self) -> None:
        self.cg.start()

    def stop(self) -> dict[str, Any]:
        counted = self.cg.stop()
        return {"instructions": counted.total, "gc_instructions": counted.gc}


@dataclass(frozen=True)
class Window:
    """The raw counters of one measured window, read at its quiescent edges."""

    result: LoadResult
    before: DbSnapshot  # the database at the window's start: the window's rows have ids above its max_id
    db: DbDelta  # statements (and by kind) and write transactions over the window
    server: Cpu  # the server tree's CPU over the window
    pg: Cpu | None  # PostgreSQL's, where its postmaster is ours to read
    stderr: str  # the tail of the server's output
    machine: dict[str, float] | None  # steal and iowait ticks over the window, the load average: as recorded
    recorded: dict[str, Any]  # what the window's probe recorded
    rss: tuple[int, int] = (0, 0)  # the server tree's resident bytes after the warm-up and at the window's end


def _window(cell: Cell, kind: str, ctx: Context, prefix: str, running: Any = None) -> Window:
    """Run the load against a fresh server (or ``running``); return the raw counters of the measured window."""
    db, opts, app = ctx.database, ctx.options, ctx.apps[cell.framework]
    pgss, postmaster = db.pg_stat_statements, db.postmaster_pid
    slow = 900 if kind == "instructions" else 60  # a server under valgrind runs tens of times slower
    with _server_and_probe(cell, kind, ctx, running) as (server, probe):
        spec = _load_spec(app, cell, server.port, opts, prefix, kind)
        if app.own:  # a user's app: its own request
            spec = app.own.load_spec(spec, ctx.workdir)
        probe.prepare()
        with _with_server_lines(server), LoadGenerator(spec, ctx.workdir, cpus=ctx.load_cpus) as load:
            warm_started = time.monotonic()
            load.wait_warm(timeout=spec.warmup + slow)
            _check_alive(server, "warm-up", warm_started)
            tables = table_counts(db.dsn) if app.own else None  # a user's app: rows written, per table
            before = db_snapshot(db.dsn, pgss)
            rss0 = tree_rss(server.pid)
            cpu0, pg0, ticks0 = tree_cpu(server.pid), tree_cpu(postmaster) if postmaster else None, machine_ticks()
            probe.start()
            window_started = time.monotonic()
            load.go()
            result = load.wait_done(timeout=opts["duration"] + slow)
            _check_alive(server, "measured window", window_started)
            recorded = probe.stop()
            cpu1, pg1, ticks1 = tree_cpu(server.pid), tree_cpu(postmaster) if postmaster else None, machine_ticks()
            rss1 = tree_rss(server.pid)
            after = db_snapshot(db.dsn, pgss)
            if tables is not None:
                recorded["tables"] = table_delta(tables, table_counts(db.dsn))
        tail = server.stderr_tail()
    return Window(result=result, before=before, db=after - before, server=cpu1 - cpu0,
                  pg=(pg1 - pg0) if pg0 and pg1 else None, stderr=tail,
                  machine=machine_record(ticks0, ticks1), recorded=recorded, rss=(rss0, rss1))


def _failures(result: LoadResult, server_tail: str) -> str | None:
    """Why the sample fails: any request that did not answer 2xx (with the first such answer, when kept)."""
    bad = {}
    for ack in result.acks:
        if not 200 <= ack.status < 300:
            bad[ack.status] = bad.get(ack.status, 0) + 1
    if not bad:
        return None
    counts = ", ".join(f"{n}× {'connection error' if s == 0 else s}" for s, n in sorted(bad.items()))
    first = f"; the first answered {result.first_error[:500]}" if result.first_error else ""
    return f"{sum(bad.values())} of {len(result.acks)} requests failed ({counts}){first}" + (
        f": {server_tail}" if server_tail else "")


def _numbers(cell: Cell, w: Window, window_rows: int | None) -> dict:
    summary = w.result.summary
    counts = summary["status_counts"]
    ok = sum(n for status, n in counts.items() if 200 <= int(status) < 300)
    field = summary.get("sum_field") or {}
    return {
        "window_s": summary["window_s"],
        "requests": summary["requests"],
        "requests_ok": ok,
        "errors": summary["requests"] - ok,
        "status_counts": counts,
        "inserts": ok * cell.inserts_per_request if cell.db == "none" or window_rows is None else window_rows,
        "server_cpu_user_s": w.server.user,
        "server_cpu_system_s": w.server.system,
        "pg_cpu_s": w.pg.total if w.pg else None,
        "loadgen_cpu_s": summary["cpu_user_s"] + summary["cpu_system_s"],
        "statements": w.db.statements,
        "transactions": w.db.transactions,
        "latency_ms": summary["latency_ms"],
        "handler_cpu_ms_mean": field["sum"] * 1e3 / field["count"] if field.get("count") else None,
        "machine": w.machine,
        "server_rss_warm_mib": w.rss[0] / 2**20 if w.rss[0] else None,
        "server_rss_end_mib": w.rss[1] / 2**20 if w.rss[1] else None,
        "statements_by_kind": w.db.by_kind,
    }


def measure(cell: Cell, repeat: int, index: int, ctx: Context, kind: str = "cpu", running: Any = None) -> Sample:
    """One sample of ``cell``, always returned: failures are recorded with their reason. ``running``: a server
    already up (a soak's, ``harness.measure.soak``) measured again instead of a fresh one."""
    sample = Sample(cell=cell, repeat=repeat, kind=kind,
                    started_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    prefix = f"{ctx.tag}-{index}"
    try:
        start = db_snapshot(ctx.database.dsn, False)
        w = _window(cell, kind, ctx, prefix, running)
    except (ServerError, LoadError, SampleFailed) as exc:
        return sample.failed(str(exc))
    if ctx.apps[cell.framework].own:  # a user's app: verified by its status codes, its rows counted per table
        window_rows, errors = None, []
    else:
        rows = rows_since(ctx.database.dsn, start.max_id)
        window_rows = sum(1 for row_id, _ in rows if row_id > w.before.max_id)
        errors = verify(w.result.acks, rows, prefix=prefix, bulk=cell.inserts_per_request > 1,
                        stores=cell.db != "none", inserts_per_request=cell.inserts_per_request)
    failure = _failures(w.result, w.stderr)
    recorded = dict(w.recorded)
    fields = _numbers(cell, w, window_rows) | {"instructions": recorded.pop("instructions", None),
                                               "gc_instructions": recorded.pop("gc_instructions", None),
                                               "extra": recorded or None}
    status = {"status": "failed", "reason": failure or f"verification: {errors[0]}"} if failure or errors else {}
    return Sample(cell=cell, repeat=repeat, kind=kind, started_at=sample.started_at, verified=not errors,
                  verify_errors=tuple(errors), **fields, **status)
