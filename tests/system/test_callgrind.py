"""Instruction counts under callgrind: real valgrind, real servers on 127.0.0.1, a real PostgreSQL.

A window counts what its requests cost and nothing else: two windows of N requests agree, 2N requests
count twice as much, and an idle window counts next to nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness._apps import discover
from harness._callgrind import (
    CallgrindError,
    CallgrindServer,
    Instructions,
    ValgrindMissing,
    callgrind_server,
    read_inclusive,
    read_totals,
    require_valgrind,
)
from harness._errors import UsageError
from harness._load import LoadGenerator, LoadSpec

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


@pytest.fixture(scope="module")
def valgrind() -> None:
    try:
        require_valgrind()
    except ValgrindMissing as exc:
        pytest.skip(str(exc))


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
def test_uvicorn_workers_are_all_counted(valgrind, tmp_path):
    with callgrind_server(APPS["asgi"], "uvicorn", db="none", dsn=NO_DB, workdir=tmp_path, workers=2) as cg:
        tree = cg.tree()  # the supervisor, multiprocessing's resource tracker, two workers: all under valgrind
        counted = window(cg, 600, tmp_path, "workers")
    assert len(tree) >= 3 and counted.processes == len(tree) and set(counted.by_process) == set(tree)
    assert counted.total / 600 > 100_000
    assert counted.by_process[tree[0]] < counted.total / 100  # the supervisor serves no request


# ---------------------------------------------------------------------------- failures


def test_missing_valgrind_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValgrindMissing) as caught:
        require_valgrind()
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, UsageError)
    assert "apt-get install valgrind" in message and "dnf install valgrind" in message
    with pytest.raises(ValgrindMissing), callgrind_server(APPS["asgi"], "uvicorn", db="none", dsn=NO_DB,
                                                          workdir=tmp_path):  # fmt: skip
        pass
    assert not list(tmp_path.iterdir())  # nothing was started or created


def test_missing_callgrind_control_is_named(valgrind, tmp_path, monkeypatch):
    os.symlink(shutil.which("valgrind"), tmp_path / "valgrind")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValgrindMissing, match="need callgrind_control, not found"):
        require_valgrind()


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


# ---------------------------------------------------------------------------- reading dumps


DUMP = """# callgrind format
version: 1
positions: line
events: Ir
summary: 0

ob=(1) /lib/libpython.so
fl=(1) gcmodule.c
fn=(1) gc_collect_main
10 5
cfn=(2) visit_reachable
calls=3 20
+2 100
fn=(2)
20 100
fn=(3) main
1 7
cfn=(1)
calls=1 10
* 105
fn=(4) gc_collect_main'2
5 1000
totals: 1112
"""


def test_a_dump_is_read_for_its_totals_and_the_gc_share(tmp_path):
    dump = tmp_path / "callgrind.1.1"
    dump.write_text(DUMP)
    assert read_totals(dump) == 1112  # not summary:, which valgrind 3.19 leaves at 0
    assert read_inclusive(dump, "gc_collect_main") == 105  # itself and what it called, once
    assert read_inclusive(dump, "visit_reachable") == 100
    assert read_inclusive(dump, "no_such_function") is None
    dump.write_text(DUMP.replace("totals: 1112\n", ""))
    with pytest.raises(CallgrindError, match="no totals"):
        read_totals(dump)
