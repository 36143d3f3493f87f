"""The seed, the original service, does what the published app does: under both servers, against a real
PostgreSQL, `GET /test-insert` answers its id and its own timings in seconds, stores the text it was
sent ("Test" when none), costs PostgreSQL exactly BEGIN, INSERT and COMMIT, and prints one timing line
per request. Its second handler, ours, `GET /test-insert-many`, does the same with N inserts in one
transaction. (The contract every app keeps is in test_apps.py.)
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from harness.measure.apps import ROOT, discover
from harness.measure.counters import MARK
from harness.measure.servers import SERVERS, Server, serve
from tests._http import TLS
from tests._rows import rows_like, texts_by_id

SEED = discover()["seed"]
TIMING_LINE = re.compile(r"^Inserted id (\d+): duration [\d.]+ ms, CPU [\d.]+ ms$", re.MULTILINE)
MANY_TIMING_LINE = re.compile(r"^Inserted (\d+) ids from (\d+): duration [\d.]+ ms, CPU [\d.]+ ms$", re.MULTILINE)


@pytest.fixture(scope="module", params=[name for name in SERVERS if discover()["seed"].serves_under(name)])
def server(request: pytest.FixtureRequest, database) -> Iterator[Server]:
    with serve(SEED, request.param, db="orm", dsn=database.dsn) as running:
        yield running


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, verify=TLS) as client:
        yield client


def insert(http: httpx.Client, **params: str) -> dict:
    response = http.get("/test-insert", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_answers_its_id_and_its_timings_in_seconds(http: httpx.Client) -> None:
    started = time.perf_counter()
    body = insert(http, text=f"seed-{uuid.uuid4().hex}")
    round_trip = time.perf_counter() - started
    assert set(body) == {"id", "duration", "cpu_duration"}, body
    assert isinstance(body["id"], int)
    assert all(isinstance(body[key], float) and body[key] >= 0 for key in ("duration", "cpu_duration")), body
    # Seconds, not milliseconds: what the handler timed fits inside the round trip the client saw.
    assert body["duration"] <= round_trip, (body, round_trip)


def test_stores_the_text_it_was_sent(http: httpx.Client, database) -> None:
    text = f"seed-{uuid.uuid4().hex} héllo ✓"
    body = insert(http, text=text)
    assert texts_by_id(database, [body["id"]]) == {body["id"]: text}


def test_stores_the_published_text_when_sent_none(http: httpx.Client, database) -> None:
    body = insert(http)
    assert texts_by_id(database, [body["id"]]) == {body["id"]: "Test"}


def statements_by_kind(database) -> collections.Counter:
    """Calls per leading keyword (BEGIN, INSERT, …) in this database, the harness's own queries left out."""
    rows = database.fetch(
        "SELECT query, calls FROM pg_stat_statements WHERE dbid = "
        f"(SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%{MARK}%' {MARK}"
    )
    counts: collections.Counter = collections.Counter()
    for query, calls in rows:
        counts[query.split(None, 1)[0].rstrip(";").upper()] += calls
    return counts


def test_each_request_is_begin_insert_commit(http: httpx.Client, database) -> None:
    if not database.pg_stat_statements:
        pytest.skip("pg_stat_statements is not available in this PostgreSQL")
    insert(http)  # whatever a connection's first use costs is not the request's
    before = statements_by_kind(database)
    requests = 5
    for _ in range(requests):
        insert(http)
    after = statements_by_kind(database)
    assert +(after - before) == {"BEGIN": requests, "INSERT": requests, "COMMIT": requests}


def test_each_request_prints_one_timing_line(server: Server, http: httpx.Client) -> None:
    printed_before = TIMING_LINE.findall(server.log.read_text(errors="replace"))
    ids = [insert(http, text=f"seed-{uuid.uuid4().hex}")["id"] for _ in range(3)]
    printed = TIMING_LINE.findall(server.log.read_text(errors="replace"))[len(printed_before):]
    assert [int(i) for i in printed] == ids


# --- GET /test-insert-many: N inserts in one transaction -------------------------------------------------


def insert_many(http: httpx.Client, **params: str) -> dict:
    response = http.get("/test-insert-many", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_many_stores_n_numbered_texts_and_answers_their_ids_in_order(http: httpx.Client, database) -> None:
    prefix = f"seed-many-{uuid.uuid4().hex} ✓"
    body = insert_many(http, n="10", text=prefix)
    assert set(body) == {"ids", "duration", "cpu_duration"}, body
    assert all(isinstance(body[key], float) and body[key] >= 0 for key in ("duration", "cpu_duration")), body
    stored = texts_by_id(database, body["ids"])
    assert [stored.get(i) for i in body["ids"]] == [f"{prefix}-{j}" for j in range(10)]
    assert body["ids"] == sorted(body["ids"])


def test_many_inserts_one_published_text_when_sent_nothing(http: httpx.Client, database) -> None:
    (row_id,) = insert_many(http)["ids"]
    assert texts_by_id(database, [row_id]) == {row_id: "Test-0"}


def test_many_is_begin_n_inserts_commit(http: httpx.Client, database) -> None:
    if not database.pg_stat_statements:
        pytest.skip("pg_stat_statements is not available in this PostgreSQL")
    insert_many(http, n="2")  # whatever a connection's first use costs is not the request's
    before = statements_by_kind(database)
    for _ in range(2):
        insert_many(http, n="5")
    after = statements_by_kind(database)
    assert +(after - before) == {"BEGIN": 2, "INSERT": 10, "COMMIT": 2}


def test_many_with_a_rejected_row_stores_none_of_them(server: Server, http: httpx.Client, database) -> None:
    prefix = f"seed-many-{uuid.uuid4().hex}"
    # Unhandled, as in the published handler: FastAPI's last-resort 500, and the transaction rolled back.
    failed = httpx.get(server.url + "/test-insert-many", params={"n": "3", "text": f"{prefix}\u0000"}, timeout=30)
    assert failed.status_code == 500
    assert rows_like(database, prefix) == 0
    assert len(insert_many(http, n="3", text=prefix)["ids"]) == 3 == rows_like(database, prefix)


@pytest.mark.parametrize("n", ["0", "101", "-1", "ten", "1.5", "1e2"])
def test_many_refuses_an_n_out_of_range_with_json(http: httpx.Client, database, n: str) -> None:
    prefix = f"seed-many-{uuid.uuid4().hex}"
    response = http.get("/test-insert-many", params={"n": n, "text": prefix})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json" and response.json()["detail"]
    assert rows_like(database, prefix) == 0


def test_many_prints_one_timing_line_per_request(server: Server, http: httpx.Client) -> None:
    log = server.log
    before = len(MANY_TIMING_LINE.findall(log.read_text(errors="replace")))
    ids = [insert_many(http, n=str(n))["ids"] for n in (1, 4)]
    printed = MANY_TIMING_LINE.findall(log.read_text(errors="replace"))[before:]
    assert printed == [(str(len(request)), str(request[0])) for request in ids]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BENCH_DB": "orm"}, "BENCH_DSN is missing"),
        ({"BENCH_DB": "orm", "BENCH_DSN": "mysql://u@127.0.0.1/db"}, "BENCH_DSN is missing or not a postgresql://"),
        ({"BENCH_DB": "core", "BENCH_DSN": "postgresql://u@127.0.0.1/db"}, "BENCH_DB=orm only"),
    ],
    ids=["no-dsn", "not-postgresql", "other-layer"],
)
def test_bad_configuration_stops_it_at_import_with_a_message(env: dict[str, str], message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    result = subprocess.run(
        [sys.executable, "-c", f"import {SEED.module}"], cwd=ROOT, env=clean | env | {"PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-500:]
