"""Conformance: every discovered app, under every server, over every layer it runs with, keeps the contract.

Real servers (started once per app × server × layer), a real PostgreSQL, real HTTP. Every row an app
claims to have written is read back; every rejected request is checked to have written nothing. A new
folder under apps/ is tested here without editing anything.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from harness._apps import App, discover
from harness._servers import SERVERS, serve
from tests._rows import rows_like, texts_by_id

APPS = discover()
MiB = 1024 * 1024


@dataclass(frozen=True)
class Cell:
    """One running server: which app, server and layer, and where it listens."""

    app: App
    server: str
    db: str
    url: str

    @property
    def stores(self) -> bool:
        return self.db != "none"


def cells(*, bulk: bool) -> list:
    return [
        pytest.param((app, server, db), id=f"{app.name}-{server}-{db}")
        for app in APPS.values()
        if app.bulk == bulk
        for server in SERVERS
        for db in app.db_layers
    ]


def run_cell(request: pytest.FixtureRequest, database) -> Iterator[Cell]:
    app, server, db = request.param
    with serve(app, server, db=db, dsn=database.dsn) as running:
        yield Cell(app, server, db, running.url)


@pytest.fixture(scope="module", params=cells(bulk=True))
def cell(request: pytest.FixtureRequest, database) -> Iterator[Cell]:
    """A server for an app with the `POST /items` contract (and its bulk twin)."""
    yield from run_cell(request, database)


@pytest.fixture(scope="module", params=cells(bulk=False))
def get_cell(request: pytest.FixtureRequest, database) -> Iterator[Cell]:
    """A server for an app whose insert endpoint is a GET taking `?text=` (the seed)."""
    yield from run_cell(request, database)


@pytest.fixture
def client(cell: Cell) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cell.url, timeout=30) as http:
        yield http


def marker() -> str:
    """A text no other test writes, so rows can be found by prefix."""
    return f"conformance-{uuid.uuid4().hex}"


def row_count(database) -> int:
    return database.fetch("SELECT count(*) FROM simple_text")[0][0]


def assert_json_error(response: httpx.Response, status: int | None = None) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.json(), response.text[:300]


async def concurrently(url: str, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """Send (method, path, options) requests all at once, each on a connection of its own."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        return await asyncio.gather(*(http.request(method, path, **opts) for method, path, opts in requests))


# --- the POST /items contract -------------------------------------------------------------------------


def test_health_is_ok(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200


def test_insert_returns_the_id_of_a_row_holding_the_text(cell: Cell, client: httpx.Client, database) -> None:
    text = marker() + " héllo ✓ 𝄞"
    response = client.post("/items", json={"text": text})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id"} and isinstance(body["id"], int)
    if cell.stores:
        assert texts_by_id(database, [body["id"]]) == {body["id"]: text}


def test_insert_accepts_1000_characters(cell: Cell, client: httpx.Client, database) -> None:
    text = marker()
    text += "𝄞" * (1000 - len(text))  # 1000 characters, ~4000 bytes: the limit counts characters
    response = client.post("/items", json={"text": text})
    assert response.status_code == 201, response.text
    if cell.stores:
        assert texts_by_id(database, [response.json()["id"]]) == {response.json()["id"]: text}


@pytest.mark.parametrize("count", [1, 100])
def test_bulk_returns_ids_in_order(cell: Cell, client: httpx.Client, database, count: int) -> None:
    texts = [f"{marker()}-{i:03}" for i in range(count)]
    response = client.post("/items/bulk", json={"texts": texts})
    assert response.status_code == 201, response.text
    ids = response.json()["ids"]
    assert len(ids) == count and len(set(ids)) == count and all(isinstance(i, int) for i in ids)
    if cell.stores:
        stored = texts_by_id(database, ids)
        assert [stored.get(i) for i in ids] == texts


def test_bulk_with_a_rejected_text_stores_nothing(cell: Cell, client: httpx.Client, database) -> None:
    prefix = marker()
    response = client.post("/items/bulk", json={"texts": [f"{prefix}-a", f"{prefix}-\u0000", f"{prefix}-c"]})
    if cell.stores:
        assert_json_error(response, 422)
    else:  # no database to reject anything: accepted, and still nothing stored
        assert response.status_code == 201, response.text
    assert rows_like(database, prefix) == 0
    assert client.post("/items", json={"text": prefix}).status_code == 201


def test_concurrent_inserts_get_distinct_ids_and_their_own_rows(cell: Cell, database) -> None:
    texts = [f"{marker()}-{i}" for i in range(200)]
    responses = asyncio.run(concurrently(cell.url, [("POST", "/items", {"json": {"text": t}}) for t in texts]))
    assert [r.status_code for r in responses] == [201] * 200, {r.status_code: r.text for r in responses}
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 200
    if cell.stores:
        stored = texts_by_id(database, ids)
        assert [stored.get(i) for i in ids] == texts


def test_a_database_error_fails_that_request_only(cell: Cell, client: httpx.Client, database) -> None:
    prefix = marker()
    response = client.post("/items", json={"text": f"{prefix}\u0000"})  # PostgreSQL refuses NUL in text
    if cell.stores:
        assert_json_error(response, 422)
    else:  # no database to reject anything
        assert response.status_code == 201, response.text
    assert rows_like(database, prefix) == 0
    after = client.post("/items", json={"text": prefix})
    assert after.status_code == 201, after.text
    if cell.stores:
        assert texts_by_id(database, [after.json()["id"]]) == {after.json()["id"]: prefix}
    else:  # the none layer's ids come from a counter: they name no row
        assert rows_like(database, prefix) == 0


def test_only_database_layers_store_rows(cell: Cell, client: httpx.Client, database) -> None:
    before = row_count(database)
    assert client.post("/items", json={"text": marker()}).status_code == 201
    assert client.post("/items/bulk", json={"texts": [marker(), marker()]}).status_code == 201
    assert row_count(database) == before + (3 if cell.stores else 0)


def _json(value: object) -> dict:
    return {"content": json.dumps(value).encode(), "headers": {"content-type": "application/json"}}


# kind -> (path, request options)
BAD_INPUTS = {
    "malformed-json": ("/items", {"content": b'{"text": "abc"', "headers": {"content-type": "application/json"}}),
    "invalid-utf8": ("/items", {"content": b'{"text": "\xff\xfe"}', "headers": {"content-type": "application/json"}}),
    "empty-body": ("/items", {"content": b"", "headers": {"content-type": "application/json"}}),
    "json-null": ("/items", _json(None)),
    "json-array": ("/items", _json(["abc"])),
    "text-not-a-string": ("/items", _json({"text": 123})),
    "text-null": ("/items", _json({"text": None})),
    "missing-text": ("/items", _json({"txt": "abc"})),
    "nested-text": ("/items", _json({"text": {"text": "abc"}})),
    "empty-text": ("/items", _json({"text": ""})),
    "1001-characters": ("/items", _json({"text": "x" * 1001})),
    "form-encoded": ("/items", {"data": {"text": "abc"}}),
    "plain-text": ("/items", {"content": b"abc", "headers": {"content-type": "text/plain"}}),
    "bulk-texts-not-a-list": ("/items/bulk", _json({"texts": "abc"})),
    "bulk-missing-texts": ("/items/bulk", _json({"text": "abc"})),
    "bulk-0-items": ("/items/bulk", _json({"texts": []})),
    "bulk-101-items": ("/items/bulk", _json({"texts": ["x"] * 101})),
    "bulk-nested-list": ("/items/bulk", _json({"texts": [["abc"]]})),
    "bulk-one-empty-text": ("/items/bulk", _json({"texts": ["abc", ""]})),
    "bulk-one-1001-characters": ("/items/bulk", _json({"texts": ["abc", "x" * 1001]})),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_rejected_with_json_and_stores_nothing(
    cell: Cell, client: httpx.Client, database, kind: str
) -> None:
    path, options = BAD_INPUTS[kind]
    before = row_count(database)
    assert_json_error(client.post(path, **options))
    assert row_count(database) == before
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("path", ["/items", "/items/bulk"])
def test_a_body_over_1_mib_gets_413(cell: Cell, client: httpx.Client, database, path: str) -> None:
    before = row_count(database)
    field = {"text": "x" * MiB} if path == "/items" else {"texts": ["x" * 1000] * (MiB // 1000 + 1)}
    assert_json_error(client.post(path, **_json(field)), 413)
    assert row_count(database) == before


# --- apps whose endpoint is a GET with ?text= (the seed) ---------------------------------------------------


def test_get_endpoint_inserts_the_text_and_reports_timings(get_cell: Cell, database) -> None:
    text = marker() + " ✓"
    with httpx.Client(base_url=get_cell.url, timeout=30) as http:
        assert http.get("/health").status_code == 200
        response = http.get(get_cell.app.path, params={"text": text})
    assert response.status_code == 200, response.text
    body = response.json()
    assert texts_by_id(database, [body["id"]]) == {body["id"]: text}
    if get_cell.app.name == "seed":  # the original service reports its own in-handler timings, in seconds
        assert body["duration"] >= 0 and body["cpu_duration"] >= 0


def test_get_endpoint_concurrent_inserts(get_cell: Cell, database) -> None:
    texts = [f"{marker()}-{i}" for i in range(200)]
    requests = [("GET", get_cell.app.path, {"params": {"text": t}}) for t in texts]
    responses = asyncio.run(concurrently(get_cell.url, requests))
    assert [r.status_code for r in responses] == [200] * 200
    ids = [r.json()["id"] for r in responses]
    stored = texts_by_id(database, ids)
    assert len(set(ids)) == 200 and [stored.get(i) for i in ids] == texts


def test_get_endpoint_keeps_serving_after_a_database_error(get_cell: Cell, database) -> None:
    prefix = marker()
    # The seed does not handle database errors (faithfully): its 500 comes from FastAPI's last-resort handler,
    # and uvicorn then closes that connection, so the next request comes on a new one.
    failed = httpx.get(get_cell.url + get_cell.app.path, params={"text": f"{prefix}\u0000"}, timeout=30)
    assert failed.status_code >= 400
    after = httpx.get(get_cell.url + get_cell.app.path, params={"text": prefix}, timeout=30)
    assert after.status_code == 200, after.text
    assert rows_like(database, prefix) == 1
