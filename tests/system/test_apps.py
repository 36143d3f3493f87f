"""Conformance: every discovered app, under every server and over every layer it runs with, keeps the contract.

Real servers (each started once per app × server × layer it is planned for), a real PostgreSQL, real HTTP.
The protocol cases (status codes, JSON error bodies, 413, 415, routes) run under every server of every app; the
cases about what is stored run over every layer of every app, the layers dealt round its servers ("which servers
run" below). Every row an app claims to have written is read back; every rejected request is checked to have
written nothing. A new folder under apps/ is tested here without editing anything.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from harness.measure.apps import App, discover
from harness.measure.servers import SERVERS, serve
from tests._http import TLS
from tests._rows import rows_like, texts_by_id

APPS = discover()
MiB = 1024 * 1024
MANY_PATHS = ["/items/bulk", "/items/each"]  # several rows per request: in one statement, one statement per row


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


# --- which servers run ----------------------------------------------------------------------------------
# A case about HTTP and JSON (a status code, an error body, 413, 415, a route) is answered by the framework and
# the server before any layer is reached: apps validate a body whole and only then hand the layer its texts.
# Such a case runs under every server of every app, not over every layer. A case about what a layer stores
# runs over every layer of every app, under one of its servers: the layers go round the app's servers in turn,
# so every server also stores and reads back rows over a layer or two. The layers themselves (apps/_db) are
# shared code, tested on their own in test_layers.py.


def servers_of(app: App) -> list[str]:
    return [server for server in SERVERS if app.serves_under(server)]


def deal(app: App) -> list[tuple[str, str]]:
    """The (server, layer) pairs an app runs in: every layer once, every server at least once and over a layer
    that stores. The storing layers go round the servers in turn (a server they do not reach gets one again);
    `none` runs under the first server, where the protocol cases then meet an app with no database behind it
    to reject anything for it."""
    servers = servers_of(app)
    storing = [db for db in app.db_layers if db != "none"]
    if not storing:
        return [(server, "none") for server in servers]
    pairs = [(servers[i % len(servers)], db) for i, db in enumerate(storing)]
    pairs += [(server, storing[i % len(storing)]) for i, server in enumerate(servers) if i >= len(storing)]
    if "none" in app.db_layers:
        pairs.insert(0, (servers[0], "none"))
    return pairs


def protocol_pairs(app: App) -> list[tuple[str, str]]:
    """Of ``deal(app)``, where the protocol cases run: each server's first pair (the first server's is `none`),
    and a storing pair too where none of those stores, so that a rejected request is also seen to store
    nothing in a real table."""
    pairs = deal(app)
    chosen = [next(pair for pair in pairs if pair[0] == server) for server in servers_of(app)]
    if not any(db != "none" for _, db in chosen):
        chosen.append(next(pair for pair in pairs if pair[1] != "none"))
    return chosen


def plan(pairs: Callable[[App], list[tuple[str, str]]], *, bulk: bool) -> list[tuple[str, str, str]]:
    return [(app.name, server, db) for app in APPS.values() if app.bulk == bulk for server, db in pairs(app)]


CELLS = plan(deal, bulk=True)  # the `POST /items` apps' servers: every layer of every app, every server
PROTOCOL_CELLS = plan(protocol_pairs, bulk=True)  # of those, every server of every app (and a storing one)
GET_CELLS = plan(deal, bulk=False)  # the `GET` apps' (the seed's)
PROTOCOL: set[str] = set()  # the names of the protocol cases


def protocol(test: Callable) -> Callable:
    """Marks a protocol case: it runs in PROTOCOL_CELLS, not in every cell."""
    PROTOCOL.add(test.__name__)
    return test


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each case's cells. The same (app, server, layer) value is the same server: pytest groups a module's
    cases by it, so each server starts once (per worker that runs its cases) and serves all of them."""
    for name, cells in (("cell", PROTOCOL_CELLS if metafunc.function.__name__ in PROTOCOL else CELLS),
                        ("get_cell", GET_CELLS)):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, cells, ids=["-".join(cell) for cell in cells], indirect=True, scope="module")


def test_every_layer_and_every_server_of_every_app_is_served() -> None:
    """What the plan promises, for every app found and whatever its layers and servers: each (app, layer) and each
    (app, server) pair has a server of its own kind that stores and reads back rows (where the app has a layer
    that stores), and the protocol cases meet every server of every app."""
    assert any(app.bulk for app in APPS.values()) and len(set(CELLS)) == len(CELLS)
    for app in APPS.values():
        cells = [(server, db) for name, server, db in (CELLS if app.bulk else GET_CELLS) if name == app.name]
        assert {db for _, db in cells} == set(app.db_layers), app.name
        storing = {server for server, db in cells if db != "none"} or {server for server, _ in cells}
        assert storing == set(servers_of(app)), app.name
        if app.bulk:
            checked = [(server, db) for name, server, db in PROTOCOL_CELLS if name == app.name]
            assert set(checked) <= set(cells) and {server for server, _ in checked} == set(servers_of(app)), app.name
            assert any(db != "none" for _, db in checked) or app.db_layers == ("none",), app.name


def run_cell(request: pytest.FixtureRequest, database) -> Iterator[Cell]:
    name, server, db = request.param
    with serve(APPS[name], server, db=db, dsn=database.dsn) as running:
        yield Cell(APPS[name], server, db, running.url)


@pytest.fixture(scope="module")
def cell(request: pytest.FixtureRequest, database) -> Iterator[Cell]:
    """A server for an app with the `POST /items` contract (and its bulk twin)."""
    yield from run_cell(request, database)


@pytest.fixture(scope="module")
def get_cell(request: pytest.FixtureRequest, database) -> Iterator[Cell]:
    """A server for an app whose insert endpoint is a GET taking `?text=` (the seed)."""
    yield from run_cell(request, database)


@pytest.fixture
def client(cell: Cell) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cell.url, timeout=30, verify=TLS) as http:
        yield http


def marker() -> str:
    """A text no other test writes, so rows can be found by prefix."""
    return f"conformance-{uuid.uuid4().hex}"


def row_count(database) -> int:
    return database.fetch("SELECT count(*) FROM simple_text")[0][0]


def settled(read: Callable[[], list[tuple]], expected: list[tuple], within: float = 2.0) -> list[tuple]:
    """What ``read()`` returns once it is ``expected``, or after ``within`` seconds whatever it returns then."""
    deadline = time.monotonic() + within
    while (found := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return found


def assert_json_error(response: httpx.Response, status: int | None = None) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.json(), response.text[:300]


async def concurrently(url: str, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """Send (method, path, options) requests all at once, each on a connection of its own."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, verify=TLS) as http:
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


@pytest.mark.parametrize("path", MANY_PATHS)
@pytest.mark.parametrize("count", [1, 100])
def test_many_return_ids_in_order(cell: Cell, client: httpx.Client, database, count: int, path: str) -> None:
    texts = [f"{marker()}-{i:03}" for i in range(count)]
    response = client.post(path, json={"texts": texts})
    assert response.status_code == 201, response.text
    ids = response.json()["ids"]
    assert len(ids) == count and len(set(ids)) == count and all(isinstance(i, int) for i in ids)
    if cell.stores:
        stored = texts_by_id(database, ids)
        assert [stored.get(i) for i in ids] == texts


@pytest.mark.parametrize("path", MANY_PATHS)
def test_many_with_a_rejected_text_store_nothing(cell: Cell, client: httpx.Client, database, path: str) -> None:
    prefix = marker()
    response = client.post(path, json={"texts": [f"{prefix}-a", f"{prefix}-\u0000", f"{prefix}-c"]})
    if cell.stores:
        assert_json_error(response, 422)
    else:  # no database to reject anything: accepted, and still nothing stored
        assert response.status_code == 201, response.text
    if path == "/items/each" and cell.db == "coalesced":  # no transaction spans the rows: the good ones stay
        # The 422 can come before the row after the rejected one is committed (insert_each's gather answers at
        # the first failure), so the rows are read once they have settled.
        good = [(f"{prefix}-a",), (f"{prefix}-c",)]
        sql = "SELECT text FROM simple_text WHERE starts_with(text, $1) ORDER BY id"
        assert settled(lambda: database.fetch(sql, prefix), good) == good
    else:
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
    assert client.post("/items/each", json={"texts": [marker(), marker()]}).status_code == 201
    assert row_count(database) == before + (5 if cell.stores else 0)


def test_each_request_of_many_gets_its_own_rows(cell: Cell, database) -> None:
    texts = [[f"{marker()}-{j}" for j in range(10)] for _ in range(30)]
    requests = [("POST", "/items/each", {"json": {"texts": t}}) for t in texts]
    responses = asyncio.run(concurrently(cell.url, requests))
    assert [r.status_code for r in responses] == [201] * 30, {r.status_code: r.text for r in responses}
    ids = [r.json()["ids"] for r in responses]
    assert len({i for request in ids for i in request}) == 300
    if cell.stores:
        stored = texts_by_id(database, [i for request in ids for i in request])
        assert [[stored.get(i) for i in request] for request in ids] == texts


@protocol
@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json;"])
def test_json_with_parameters_or_in_any_case_is_json(cell: Cell, client: httpx.Client, database, content_type) -> None:
    text = marker()
    response = client.post("/items", content=json.dumps({"text": text}), headers={"content-type": content_type})
    assert response.status_code == 201, response.text
    assert rows_like(database, text) == (1 if cell.stores else 0)


@protocol
def test_a_repeated_key_counts_once_as_its_last_value(cell: Cell, client: httpx.Client, database) -> None:
    text = marker()  # what every JSON parser here does; the contract is met by the value it keeps
    response = client.post("/items", content=f'{{"text": 1, "text": "{text}"}}'.encode(), headers=JSON)
    assert response.status_code == 201, response.text
    if cell.stores:
        assert texts_by_id(database, [response.json()["id"]]) == {response.json()["id"]: text}
    assert_json_error(client.post("/items", content=f'{{"text": "{text}", "text": 1}}'.encode(), headers=JSON))


JSON = {"content-type": "application/json"}


def _json(value: object) -> dict:
    return {"content": json.dumps(value).encode(), "headers": JSON}


def _raw(body: bytes, headers: dict[str, str] = JSON) -> dict:
    return {"content": body, "headers": headers}


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
    # numbers JSON cannot carry back, in a reply that would echo them
    "nan": ("/items", _raw(b'{"text": NaN}')),
    "infinity": ("/items", _raw(b'{"text": -Infinity}')),
    "1e999": ("/items", _raw(b'{"text": 1e999}')),
    "huge-integer": ("/items", _raw(b'{"text": ' + b"9" * 5000 + b"}")),
    "bulk-nan": ("/items/bulk", _raw(b'{"texts": ["abc", NaN]}')),
    # a lone surrogate is no text: escaped, as raw (CESU) bytes, in a list, beyond the length limit
    "escaped-surrogate": ("/items", _raw(b'{"text": "abc\\ud800"}')),
    "raw-surrogate": ("/items", _raw(b'{"text": "abc\xed\xa0\x80"}')),
    "surrogate-in-a-list": ("/items", _raw(b'{"text": ["\\udfff"]}')),
    "surrogate-1001-characters": ("/items", _raw(b'{"text": "' + b"\\ud800" * 1001 + b'"}')),
    "bulk-surrogate": ("/items/bulk", _raw(b'{"texts": ["abc", "\\ud800"]}')),
    "overlong-utf8": ("/items", _raw(b'{"text": "\xc0\xaf"}')),
    # nesting deeper than any parser recurses
    "deeply-nested-array": ("/items", _raw(b"[" * 100_000)),
    "deeply-nested-text": ("/items", _raw(b'{"text": ' + b'{"a": ' * 50_000)),
    "bulk-deeply-nested": ("/items/bulk", _raw(b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")),
    # a body not declared as JSON, however valid a JSON it is
    "json-as-text-plain": ("/items", _raw(b'{"text": "abc"}', {"content-type": "text/plain"})),
    "json-without-content-type": ("/items", _raw(b'{"text": "abc"}', {})),
    "json-as-a-suffix-type": ("/items", _raw(b'{"text": "abc"}', {"content-type": "application/merge-patch+json"})),
    "json-as-jsonx": ("/items", _raw(b'{"text": "abc"}', {"content-type": "application/jsonx"})),
    "bulk-json-as-text-plain": ("/items/bulk", _raw(b'{"texts": ["abc"]}', {"content-type": "text/plain"})),
    "empty-body-without-content-type": ("/items", _raw(b"", {})),
    # other shapes of wrong
    "text-true": ("/items", _json({"text": True})),
    "text-a-float": ("/items", _json({"text": 1.5})),
    "json-string": ("/items", _json("abc")),
    "trailing-garbage": ("/items", _raw(b'{"text": "abc"} x')),
    "two-documents": ("/items", _raw(b'{"text": "abc"}{"text": "abc"}')),
    "raw-control-character": ("/items", _raw(b'{"text": "a\nb"}')),
    "single-quotes": ("/items", _raw(b"{'text': 'abc'}")),
    "bulk-texts-an-object": ("/items/bulk", _json({"texts": {"0": "abc"}})),
    "bulk-texts-null": ("/items/bulk", _json({"texts": None})),
    "bulk-a-number": ("/items/bulk", _json({"texts": ["abc", 1]})),
    "bulk-a-null": ("/items/bulk", _json({"texts": ["abc", None]})),
}
# /items/each takes what /items/bulk takes, and refuses what it refuses
BAD_INPUTS |= {kind.replace("bulk-", "each-", 1): ("/items/each", options)
               for kind, (path, options) in list(BAD_INPUTS.items()) if path == "/items/bulk"}
# a body not declared as `application/json` is refused as such by every app, whatever it holds
NOT_DECLARED_JSON = {kind for kind, (_, options) in BAD_INPUTS.items()
                     if options.get("headers", {}).get("content-type") != "application/json"}


@protocol
@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_rejected_with_json_and_stores_nothing(
    cell: Cell, client: httpx.Client, database, kind: str
) -> None:
    path, options = BAD_INPUTS[kind]
    before = row_count(database)
    assert_json_error(client.post(path, **options), 415 if kind in NOT_DECLARED_JSON else None)
    assert row_count(database) == before
    assert client.get("/health").status_code == 200


@protocol
@pytest.mark.parametrize("path", ["/items", *MANY_PATHS])
def test_a_body_over_1_mib_gets_413(cell: Cell, client: httpx.Client, database, path: str) -> None:
    before = row_count(database)
    field = {"text": "x" * MiB} if path == "/items" else {"texts": ["x" * 1000] * (MiB // 1000 + 1)}
    assert_json_error(client.post(path, **_json(field)), 413)
    assert row_count(database) == before


@protocol
def test_a_body_over_1_mib_without_a_length_gets_413(cell: Cell, client: httpx.Client, database) -> None:
    def chunks() -> Iterator[bytes]:  # sent chunked: no Content-Length to refuse it by
        yield b'{"text": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"}'

    before = row_count(database)
    assert_json_error(client.post("/items", content=chunks(), headers=JSON), 413)
    assert row_count(database) == before


@protocol
@pytest.mark.parametrize(("method", "path"), [("PUT", "/items"), ("POST", "/nowhere"), ("GET", "/items/each")])
def test_a_wrong_path_or_method_answers_json(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path, **_json({"text": "abc"}))
    assert response.status_code in (404, 405), response.text
    assert_json_error(response)


# --- apps whose endpoint is a GET with ?text= (the seed) ---------------------------------------------------


def test_get_endpoint_inserts_the_text_and_reports_timings(get_cell: Cell, database) -> None:
    text = marker() + " ✓"
    with httpx.Client(base_url=get_cell.url, timeout=30, verify=TLS) as http:
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
    failed = httpx.get(get_cell.url + get_cell.app.path, params={"text": f"{prefix}\u0000"}, timeout=30, verify=TLS)
    assert failed.status_code >= 400
    after = httpx.get(get_cell.url + get_cell.app.path, params={"text": prefix}, timeout=30, verify=TLS)
    assert after.status_code == 200, after.text
    assert rows_like(database, prefix) == 1
