"""The database failing, seen through HTTP, as a user's operations would see a PostgreSQL restart, failover or
stall: every app, under every server it speaks, over every layer it has with a database.

Three faults, each real:

- **drop**: every connection of the app's server is terminated from the database side (`pg_terminate_backend`,
  from another connection), once with one request of each server caught inside PostgreSQL (held there by a lock),
  once with every connection idle, as a restart finds them;
- **unreachable**: the app reaches PostgreSQL through a TCP forwarder of this test's, which closes every
  connection and its port (connections refused) for a few seconds, then listens again on the same port;
- **stall**: the table is locked from another connection (`LOCK TABLE … IN ACCESS EXCLUSIVE MODE` in an open
  transaction) for longer than the layer's timeouts, with more requests in flight than the pool has connections.

Each request in flight or arriving while the database is away is answered 503 with a JSON body within the
layer's timeouts (BENCH_ACQUIRE_TIMEOUT for a connection, BENCH_STATEMENT_TIMEOUT for a statement: both small
here), never 500, never plain text, never a hang; from about a second after the database is back, every
request is answered 2xx again, the app recovering by itself. Every 2xx has its rows, and no other answer left
a row behind (read once the app's server has stopped, so a statement answered as failed cannot commit later).

A case is one app × server × layer × fault; the servers of one app × server pair (a layer each) start together
and live through the three faults in turn, so each server starts once. The seed is left out: it is the original
app as published, which answers a database error with FastAPI's plain-text 500 (tests/system/test_apps.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from unittest import mock
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from harness.axes import SERVERS
from harness.measure.apps import App, discover
from harness.measure.process import free_port
from harness.measure.servers import serve
from tests._http import TLS

APPS = {name: app for name, app in discover().items() if not app.published}
FAULTS = ("drop", "unreachable", "stall")
SHAPES = ("one", "bulk", "each")  # the requests go round the app's endpoints

TIMEOUT = 1.0  # BENCH_ACQUIRE_TIMEOUT and BENCH_STATEMENT_TIMEOUT, seconds
ANSWERED_WITHIN = 2 * TIMEOUT + 0.75  # a connection, then a statement, then the answer: the layer's bound
RECOVERY = 1.0  # 2xx again this long after the database is back ("within about a second")
AFTERWARDS = 0.6  # requests keep coming this long after RECOVERY: every one of them 2xx
OUTAGE = 3.0  # how long the forwarder refuses connections
STALL = ANSWERED_WITHIN + 1.0  # how long the lock is held: everything sent meanwhile is answered before its end
POOL_SIZE = 2  # a stall has POOL_SIZE + 1 requests in flight: one of them waits for a connection
ENVIRONMENT = {"BENCH_ACQUIRE_TIMEOUT": str(TIMEOUT), "BENCH_STATEMENT_TIMEOUT": str(TIMEOUT)}
BLOCKED_BY_US = "SELECT count(*) FROM pg_stat_activity WHERE pg_blocking_pids(pid) @> ARRAY[pg_backend_pid()]"


def storing_layers(app: App) -> list[str]:
    return [db for db in app.db_layers if db != "none"]


PAIRS = [(app.name, server) for app in APPS.values() for server in SERVERS if app.serves_under(server)]
CASES = [(name, server, db, fault) for name, server in PAIRS for db in storing_layers(APPS[name]) for fault in FAULTS]


# --- the way to the database ---------------------------------------------------------------------------


class Forwarder:
    """A TCP forwarder on 127.0.0.1 to PostgreSQL, on an event loop of its own thread (the apps' servers connect
    through it while the test's own loop comes and goes). `cut()` closes every connection and the port;
    `restore()` listens on the same port again. `upstream_ports()` tells the apps' backends from any other:
    they are PostgreSQL's `client_port`s of its connections."""

    def __init__(self, dsn: str) -> None:
        url = urlsplit(dsn)
        self._target = (url.hostname, url.port)
        self.port = free_port()
        self.dsn = url._replace(netloc=f"{url.netloc.rpartition('@')[0]}@127.0.0.1:{self.port}").geturl()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._pipes: dict[asyncio.StreamWriter, asyncio.StreamWriter] = {}  # app side -> PostgreSQL side

    def __enter__(self) -> Forwarder:
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self.call(self._listen)
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self._cut)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def call(self, coroutine: Callable[[], Awaitable]) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine(), self._loop).result(timeout=10)

    async def cut(self) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._cut(), self._loop))

    async def restore(self) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._listen(), self._loop))

    async def upstream_ports(self) -> list[int]:
        async def ports() -> list[int]:
            return [upstream.get_extra_info("sockname")[1] for upstream in self._pipes.values()]

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(ports(), self._loop))

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for client, upstream in list(self._pipes.items()):
            client.transport.abort()
            upstream.transport.abort()
        self._pipes.clear()

    async def _forward(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self._target)
        except OSError:
            client.transport.abort()
            return
        if self._server is None:  # cut while this connection was being made
            client.transport.abort()
            upstream.transport.abort()
            return
        self._pipes[client] = upstream
        try:
            await asyncio.gather(_pipe(client_reader, upstream), _pipe(upstream_reader, client))
        finally:
            self._pipes.pop(client, None)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()


# --- the servers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers_for(app: App, server: str, dsn: str) -> Iterator[dict[str, str]]:
    """One server per storing layer of `app` under `server`, started and stopped side by side: db -> URL."""
    layers = storing_layers(app)
    managers = {db: serve(app, server, db=db, dsn=dsn, pool_size=POOL_SIZE) for db in layers}
    with mock.patch.dict("os.environ", ENVIRONMENT), ThreadPoolExecutor(len(layers)) as threads:
        started = {db: threads.submit(manager.__enter__) for db, manager in managers.items()}
        entered = [db for db, future in started.items() if future.exception() is None]
        try:
            if failed := [future.exception() for future in started.values() if future.exception() is not None]:
                raise failed[0]
            yield {db: started[db].result().url for db in layers}
        finally:
            for stopped in [threads.submit(managers[db].__exit__, None, None, None) for db in entered]:
                stopped.result()


# --- requests and what became of them ------------------------------------------------------------------


@dataclass
class Answer:
    """One request: what it sent, when, and what came back (status None: no answer in time)."""

    db: str
    fault: str
    phase: str  # "fault": the database away; "recovering": back less than RECOVERY ago; "recovered"
    shape: str
    texts: list[str]
    took: float
    status: int | None = None
    content_type: str = ""
    body: str = ""

    def ids(self) -> list[int]:
        data = json.loads(self.body)
        return [data["id"]] if self.shape == "one" else data["ids"]

    def problem(self) -> str | None:
        """What is wrong with the answer itself (its rows are checked apart)."""
        said = (f"{self.phase} {self.shape}: {self.status} {self.content_type or '-'} {self.body[:160]!r} "
                f"after {self.took:.2f} s")
        if self.status is None:
            return f"{self.phase} {self.shape}: no answer ({self.body}) after {self.took:.2f} s"
        if self.took > ANSWERED_WITHIN:
            return f"{said} (the bound is {ANSWERED_WITHIN} s)"
        if 200 <= self.status < 300:
            return None if self.phase != "fault" else f"{said} (2xx while the database is away)"
        if self.phase == "recovered":
            return f"{said} (2xx expected {RECOVERY} s after the database is back)"
        if self.status != 503 or not self.content_type.startswith("application/json") or not _is_json(self.body):
            return f"{said} (503 with a JSON body expected)"
        return None


def _is_json(body: str) -> bool:
    try:
        return bool(json.loads(body))
    except ValueError:
        return False


@dataclass
class Group:
    """The servers of one app × server pair, a layer each, and every answer they gave."""

    app: App
    urls: dict[str, str]
    prefix: str
    answers: list[Answer] = field(default_factory=list)
    sent: int = 0

    async def send(self, http: httpx.AsyncClient, db: str, fault: str, phase: str | Callable[[], str]) -> Answer:
        shape = SHAPES[self.sent % len(SHAPES)]
        self.sent += 1
        text = f"{self.prefix}-{db}-{fault}-{self.sent}"
        texts = [text] if shape == "one" else [f"{text}-{n}" for n in range(2)]
        body = {"text": text} if shape == "one" else {"texts": texts}
        method, path = self.app.endpoints[shape]
        started = time.monotonic()
        phase = phase if isinstance(phase, str) else phase()
        answer = Answer(db, fault, phase, shape, texts, 0.0)
        try:
            response = await http.request(method, self.urls[db] + path, json=body, timeout=ANSWERED_WITHIN + 2)
            answer.status, answer.body = response.status_code, response.text
            answer.content_type = response.headers.get("content-type", "")
        except httpx.HTTPError as exc:
            answer.body = f"{type(exc).__name__}: {exc}"
        answer.took = time.monotonic() - started
        self.answers.append(answer)
        return answer

    async def in_turn(self, http: httpx.AsyncClient, fault: str, until: float, phase: Callable[[], str]) -> None:
        """Requests one at a time to every server (the servers side by side) until `until` (monotonic)."""

        async def one_server(db: str) -> None:
            while time.monotonic() < until:
                await self.send(http, db, fault, phase)

        await asyncio.gather(*map(one_server, self.urls))

    async def recover(self, http: httpx.AsyncClient, fault: str) -> None:
        """The database is back from now: requests one at a time, which must be 2xx from RECOVERY on."""
        back = time.monotonic()
        await self.in_turn(http, fault, back + RECOVERY + AFTERWARDS,
                           lambda: "recovering" if time.monotonic() < back + RECOVERY else "recovered")

    async def in_flight(self, http: httpx.AsyncClient, fault: str, per_server: int) -> list[asyncio.Future]:
        return [asyncio.ensure_future(self.send(http, db, fault, "fault")) for db in self.urls
                for _ in range(per_server)]


async def caught_inside(admin: asyncpg.Connection, count: int, within: float = 3.0) -> None:
    """Wait until `count` statements wait for our lock (or `within` seconds: a layer may queue them instead)."""
    deadline = time.monotonic() + within
    while await admin.fetchval(BLOCKED_BY_US) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def terminate_the_apps_backends(admin: asyncpg.Connection, forwarder: Forwarder) -> None:
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = ANY($1) "
                        "AND pid <> pg_backend_pid()", await forwarder.upstream_ports())


async def drop(group: Group, http: httpx.AsyncClient, forwarder: Forwarder, admin: asyncpg.Connection) -> None:
    # a request caught inside PostgreSQL when its connection goes ...
    async with admin.transaction():
        await admin.execute("LOCK TABLE simple_text IN ACCESS EXCLUSIVE MODE")
        caught = await group.in_flight(http, "drop", 1)
        await caught_inside(admin, len(caught))
        await terminate_the_apps_backends(admin, forwarder)
    await asyncio.gather(*caught)
    await group.recover(http, "drop")
    # ... and idle connections gone, which a pool hands out next (asyncpg's is last in, first out)
    await terminate_the_apps_backends(admin, forwarder)
    await group.recover(http, "drop")


async def unreachable(group: Group, http: httpx.AsyncClient, forwarder: Forwarder, admin: asyncpg.Connection) -> None:
    await forwarder.cut()
    await group.in_turn(http, "unreachable", time.monotonic() + OUTAGE, lambda: "fault")
    await forwarder.restore()
    await group.recover(http, "unreachable")


async def stall(group: Group, http: httpx.AsyncClient, forwarder: Forwarder, admin: asyncpg.Connection) -> None:
    async with admin.transaction():
        await admin.execute("LOCK TABLE simple_text IN ACCESS EXCLUSIVE MODE")
        ends = time.monotonic() + STALL
        caught = await group.in_flight(http, "stall", POOL_SIZE + 1)
        await group.in_turn(http, "stall", ends - ANSWERED_WITHIN, lambda: "fault")
        await asyncio.gather(*caught)
        await asyncio.sleep(max(0.0, ends - time.monotonic()))
    await group.recover(http, "stall")


SCENARIOS = {"drop": drop, "unreachable": unreachable, "stall": stall}


async def run_faults(group: Group, forwarder: Forwarder, admin_dsn: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        async with httpx.AsyncClient(verify=TLS, limits=httpx.Limits(max_connections=100)) as http:
            for db in group.urls:  # every server stores before the faults (and its pool holds a connection)
                await group.send(http, db, "before", "recovered")
            for fault in FAULTS:
                await SCENARIOS[fault](group, http, forwarder, admin)
    finally:
        await admin.close()


def row_problems(answers: list[Answer], stored: dict[str, list[int]]) -> list[str]:
    """Every 2xx has its rows (the ids it answered, a row each), and nothing else left one."""
    problems = []
    for answer in answers:
        found = [stored.get(text, []) for text in answer.texts]
        if answer.status is not None and 200 <= answer.status < 300:
            if found != [[row_id] for row_id in answer.ids()]:
                problems.append(f"{answer.phase} {answer.shape}: answered {answer.status} {answer.body!r}, "
                                f"stored {found}")
        elif any(found):
            problems.append(f"{answer.phase} {answer.shape}: answered {answer.status} {answer.body[:120]!r}, "
                            f"yet stored {found}")
    return problems


OUTCOMES: dict[tuple[str, str], dict[tuple[str, str], list[str]] | BaseException] = {}


def outcome(name: str, server: str, database) -> dict[tuple[str, str], list[str]]:
    """The problems of each (layer, fault) of one app × server pair, whose servers meet every fault once per test
    process (its cases run one after another); a pair that could not run fails each of its cases alike."""
    if (name, server) not in OUTCOMES:
        try:
            OUTCOMES[name, server] = run_pair(APPS[name], server, database)
        except Exception as exc:
            OUTCOMES[name, server] = exc
    if isinstance(found := OUTCOMES[name, server], BaseException):
        raise found
    return found


def run_pair(app: App, server: str, database) -> dict[tuple[str, str], list[str]]:
    group_prefix = f"faults-{uuid.uuid4().hex}"
    with Forwarder(database.dsn) as forwarder, servers_for(app, server, forwarder.dsn) as urls:
        group = Group(app, urls, group_prefix)
        asyncio.run(run_faults(group, forwarder, database.dsn))
    stored: dict[str, list[int]] = {}
    for row_id, text in database.fetch("SELECT id, text FROM simple_text WHERE starts_with(text, $1)", group_prefix):
        stored.setdefault(text, []).append(row_id)
    problems: dict[tuple[str, str], list[str]] = {(db, fault): [] for db in urls for fault in ("before", *FAULTS)}
    for answer in group.answers:
        if problem := answer.problem():
            problems[answer.db, answer.fault].append(problem)
    for (db, fault), listed in problems.items():
        listed += row_problems([a for a in group.answers if (a.db, a.fault) == (db, fault)], stored)
    return problems


def test_every_app_server_and_layer_meets_every_fault() -> None:
    """The plan covers what discovery finds: every storing layer of every app but the published one, under every
    server that speaks its interface, meets each fault."""
    for app in APPS.values():
        planned = {(server, db) for name, server, db, _ in CASES if name == app.name}
        assert planned == {(server, db) for server in SERVERS if app.serves_under(server)
                           for db in storing_layers(app)}, app.name
    assert len(CASES) == len(set(CASES)) == 3 * len({case[:3] for case in CASES})


@pytest.mark.slow
@pytest.mark.parametrize(("name", "server", "db", "fault"), CASES, ids=["-".join(case) for case in CASES])
def test_a_failing_database_is_503_in_json_and_then_2xx_again(database, name: str, server: str, db: str,
                                                               fault: str) -> None:
    problems = outcome(name, server, database)
    assert not problems[db, "before"], problems[db, "before"]
    assert not problems[db, fault], "\n".join(problems[db, fault])
