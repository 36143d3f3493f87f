"""Instruction counts under callgrind: real valgrind, real servers on 127.0.0.1, a real PostgreSQL.

A window counts what its requests cost and nothing else: two windows of N requests agree, 2N requests
count twice as much, and an idle window counts next to nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.measure.apps import discover
from harness.measure.callgrind import (
    CallgrindError,
    CallgrindServer,
    Instructions,
    callgrind_server,
)
from harness.measure.load import LoadGenerator, LoadSpec

APPS = discover()
N = 1500  # requests per window: ~3 s instrumented for the bare app
NO_DB = "postgresql://127.0.0.1:9/unused"


def window(cg: CallgrindServer, requests: int, workdir: Path, prefix: str, path: str = "/items") -> Instructions:
    """Warm up uninstrumented, count exactly ``requests`` requests, check every one succeeded."""
    spec = LoadSpec(host="127.0.0.1", port=cg.port, method="POST", path=path, body="text", inserts=1,
                    concurrency=64, rate=0, warmup=0.5, duration=0, prefix=prefix, requests=requests)  # fmt: skip
    with LoadGenerator(spec, workdir) as load:
        load.wait_warm(timeout=60)
        cg.start()
        load.go()
        result = load.wait_done(timeout=120)
        counted = cg.stop()
    assert result.summary["status_counts"] == {"201": requests}, cg.stderr_tail()
    return counted


# ---------------------------------------------------------------------------- counting


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_windows_of_n_requests_repeat_and_2n_count_twice(valgrind, server, tmp_path):
    with callgrind_server(APPS["asgi"], server, db="none", dsn=NO_DB, workdir=tmp_path) as cg:
        first, second, double = (window(cg, n, tmp_path, f"w{i}") for i, n in enumerate((N, N, 2 * N)))
        cg.start()
        idle = cg.stop()  # no requests: almost nothing (timers, idle wake-ups)
    # Python's full collections come in lumps (a few per thousand requests); what is left repeats closely.
    # granian's Rust threads add ~1% that depends on how requests interleave; uvicorn's count repeats to 0.2%.
    tolerance = 0.01 if server == "uvicorn" else 0.02
    assert second.without_gc == pytest.approx(first.without_gc, rel=tolerance)
    assert double.without_gc == pytest.approx(first.without_gc + second.without_gc, rel=tolerance)
    assert double.total == pytest.approx(first.total + second.total, rel=0.05)
    if server == "uvicorn":
        assert second.total == pytest.approx(first.total, rel=0.01)
    assert idle.total < first.total / N * 20  # an idle window costs less than 20 requests
    assert 50_000 < first.total / N < 1_000_000  # the bare app: ~150-170k instructions per request
    assert first.processes == len(first.by_process) == (1 if server == "uvicorn" else 2)  # granian: + worker


@pytest.mark.slow
def test_an_orm_window_against_postgresql_counts_several_bare_requests(valgrind, database, tmp_path):
    with callgrind_server(APPS["asgi"], "uvicorn", db="orm", dsn=database.dsn, workdir=tmp_path) as cg:
        counted = window(cg, 150, tmp_path, "orm")
        assert cg.alive() and cg.url == f"http://127.0.0.1:{cg.port}"
    none_per_request = 170_000
    assert counted.total / 150 > 3 * none_per_request  # SQLAlchemy's ORM costs several times the bare app


@pytest.mark.slow
@pytest.mark.alone  # four processes under valgrind: on a loaded machine vgdb is slow to see them
def test_uvicorn_workers_are_all_counted(valgrind, tmp_path):
    with callgrind_server(APPS["asgi"], "uvicorn", db="none", dsn=NO_DB, workdir=tmp_path, workers=2) as cg:
        tree = cg.tree()  # the supervisor, multiprocessing's resource tracker, two workers: all under valgrind
        counted = window(cg, 600, tmp_path, "workers")
    assert len(tree) >= 3 and counted.processes == len(tree) and set(counted.by_process) == set(tree)
    assert counted.total / 600 > 100_000
    assert counted.by_process[tree[0]] < counted.total / 100  # the supervisor serves no request


# ---------------------------------------------------------------------------- failures


@pytest.mark.slow
def test_a_server_failing_under_valgrind_reports_its_output(valgrind, tmp_path):
    said = r"(?s)asgi under uvicorn under valgrind: server exited .*BENCH_DB='no-such-layer' is not a database layer"
    with pytest.raises(CallgrindError, match=said):  # noqa: SIM117
        with callgrind_server(APPS["asgi"], "uvicorn", db="no-such-layer", dsn=NO_DB, workdir=tmp_path):
            pass


@pytest.mark.slow
def test_controlling_a_dead_server_is_a_callgrind_error(valgrind, tmp_path):
    with callgrind_server(APPS["asgi"], "uvicorn", db="none", dsn=NO_DB, workdir=tmp_path) as cg:
        cg.server.proc.kill()
        cg.server.proc.wait()
        with pytest.raises(CallgrindError, match="server exited"):
            cg.start()

