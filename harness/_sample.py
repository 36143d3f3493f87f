"""One sample of one cell: a fresh server, warm-up, one measured window, verification.

The window's edges are quiescent: the load generator drains every in-flight request before it says
WARM and before it says DONE, and the CPU and database counters are read only then. So the Δs divide
cleanly by what the window did: rows counted in the database, requests answered.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from harness._apps import App
from harness._bench import Cell
from harness._load import LoadError, LoadGenerator, LoadResult, LoadSpec
from harness._measure import Cpu, db_snapshot, rows_since, tree_cpu
from harness._postgres import Database
from harness._servers import Server, ServerError, serve
from harness._verify import verify

SEED_FIELD = "cpu_ms"  # what an app reports of its own in-handler CPU, if it does


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


def _load_spec(app: App, cell: Cell, port: int, options: dict, prefix: str) -> LoadSpec:
    if app.method == "GET":
        body, path = "query", app.path
    elif cell.inserts_per_request > 1:
        body, path = "texts", app.path.rstrip("/") + "/bulk"
    else:
        body, path = "text", app.path
    return LoadSpec(host="127.0.0.1", port=port, method=app.method, path=path, body=body,
                    inserts=cell.inserts_per_request, concurrency=options["concurrency"],
                    rate=options.get("rate") or 0, warmup=options["warmup"], duration=options["duration"],
                    prefix=prefix, sum_field=SEED_FIELD)


def _check_alive(server: Server, when: str) -> None:
    if not server.alive():
        raise SampleFailed(f"server exited with code {server.proc.returncode} during the {when}: "
                           f"{server.stderr_tail()}")


def _window(cell: Cell, ctx: Context, prefix: str) -> dict:
    """Run the load against a fresh server; return the raw counters of the measured window."""
    db, opts, app = ctx.database, ctx.options, ctx.apps[cell.framework]
    pgss = db.pg_stat_statements
    postmaster = db.postmaster_pid
    with serve(app, cell.server, db=cell.db, dsn=db.dsn, cpus=ctx.server_cpus, workers=opts["workers"]) as server:
        spec = _load_spec(app, cell, server.port, opts, prefix)
        with LoadGenerator(spec, ctx.workdir, cpus=ctx.load_cpus) as load:
            load.wait_warm(timeout=opts["warmup"] + 60)
            _check_alive(server, "warm-up")
            before = db_snapshot(db.dsn, pgss)
            cpu0, pg0 = tree_cpu(server.pid), tree_cpu(postmaster) if postmaster else None
            load.go()
            result = load.wait_done(timeout=opts["duration"] + 60)
            cpu1, pg1 = tree_cpu(server.pid), tree_cpu(postmaster) if postmaster else None
            _check_alive(server, "measured window")
            after = db_snapshot(db.dsn, pgss)
        tail = server.stderr_tail()
    return {"result": result, "before": before, "after": after, "server": cpu1 - cpu0,
            "pg": (pg1 - pg0) if pg0 and pg1 else None, "stderr": tail}


def _failures(result: LoadResult, server_tail: str) -> str | None:
    bad = {}
    for ack in result.acks:
        if not 200 <= ack.status < 300:
            bad[ack.status] = bad.get(ack.status, 0) + 1
    if not bad:
        return None
    counts = ", ".join(f"{n}× {'connection error' if s == 0 else s}" for s, n in sorted(bad.items()))
    return f"{sum(bad.values())} of {len(result.acks)} requests failed ({counts})" + (
        f": {server_tail}" if server_tail else "")


def _numbers(cell: Cell, w: dict, window_rows: int) -> dict:
    result: LoadResult = w["result"]
    summary = result.summary
    counts = summary["status_counts"]
    ok = sum(n for status, n in counts.items() if 200 <= int(status) < 300)
    server: Cpu = w["server"]
    before, after = w["before"], w["after"]
    field = summary.get("sum_field") or {}
    return {
        "window_s": summary["window_s"],
        "requests": summary["requests"],
        "requests_ok": ok,
        "errors": summary["requests"] - ok,
        "status_counts": counts,
        "inserts": ok * cell.inserts_per_request if cell.db == "none" else window_rows,
        "server_cpu_user_s": server.user,
        "server_cpu_system_s": server.system,
        "pg_cpu_s": w["pg"].total if w["pg"] else None,
        "loadgen_cpu_s": summary["cpu_user_s"] + summary["cpu_system_s"],
        "statements": None if before.statements is None else after.statements - before.statements,
        "transactions": after.next_xid - before.next_xid,
        "latency_ms": summary["latency_ms"],
        "handler_cpu_ms_mean": field["sum"] / field["count"] if field.get("count") else None,
        "handler_wall_ms_mean": None,
    }


def measure(cell: Cell, repeat: int, index: int, ctx: Context) -> dict:
    """One sample of ``cell``, always returned: failures are recorded with their reason."""
    sample = {"framework": cell.framework, "server": cell.server, "db": cell.db,
              "inserts_per_request": cell.inserts_per_request, "repeat": repeat,
              "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "status": "ok", "reason": None, "verified": False, "verify_errors": []}
    prefix = f"{ctx.tag}-{index}"
    try:
        start = db_snapshot(ctx.database.dsn, False)
        w = _window(cell, ctx, prefix)
    except (ServerError, LoadError, SampleFailed) as exc:
        return sample | {"status": "failed", "reason": str(exc)}
    rows = rows_since(ctx.database.dsn, start.max_id)
    window_rows = sum(1 for row_id, _ in rows if row_id > w["before"].max_id)
    sample |= _numbers(cell, w, window_rows)
    errors = verify(w["result"].acks, rows, prefix=prefix, bulk=cell.inserts_per_request > 1,
                    stores=cell.db != "none", inserts_per_request=cell.inserts_per_request)
    sample |= {"verified": not errors, "verify_errors": errors}
    failure = _failures(w["result"], w["stderr"])
    if failure or errors:
        sample |= {"status": "failed", "reason": failure or f"verification: {errors[0]}"}
    return sample
