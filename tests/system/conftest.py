"""Shared fixtures: one real embedded PostgreSQL for the whole test session (for each parallel worker), read
over one kept connection; and the turns parallel workers take around a test marked `alone`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from harness.measure.postgres import Database, embedded


@dataclasses.dataclass
class SessionDatabase(Database):
    """The session's database, whose ``fetch`` keeps one connection on an event loop of its own.

    ``Database.fetch`` opens a connection per query (a new backend and a SCRAM exchange: ~14 ms); the conformance
    matrix reads back after nearly every request, thousands of times a session. A forked child opens its own.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: asyncpg.Connection | None = None
        self._pid = 0

    def fetch(self, sql: str, *args: object) -> list[tuple]:
        with self._lock:
            if self._pid != os.getpid():
                self._loop, self._conn, self._pid = asyncio.new_event_loop(), None, os.getpid()
            try:
                return self._loop.run_until_complete(self._fetch(sql, args))
            except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError):
                if self._conn is None or not self._conn.is_closed():
                    raise
                self._conn = None  # the server ended it between two queries: the query was never sent
                return self._loop.run_until_complete(self._fetch(sql, args))

    async def _fetch(self, sql: str, args: tuple) -> list[tuple]:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn)
        return [tuple(row) for row in await self._conn.fetch(sql, *args)]

    def close(self) -> None:
        with self._lock:
            if self._loop is not None and self._pid == os.getpid():
                if self._conn is not None and not self._conn.is_closed():
                    self._loop.run_until_complete(self._conn.close())
                self._loop.close()
            self._loop, self._conn = None, None


def kept(db: Database) -> SessionDatabase:
    return SessionDatabase(**{f.name: getattr(db, f.name) for f in dataclasses.fields(db) if f.init})


@pytest.fixture(scope="session")
def database() -> Iterator[Database]:
    """A running embedded PostgreSQL with ``simple_text`` created (or the server named by BENCH_TEST_DSN)."""
    if dsn := os.environ.get("BENCH_TEST_DSN"):
        from harness.measure.postgres import existing

        db = kept(existing(worker_database(dsn)))
        yield db
        db.close()
        return
    with embedded() as started:
        db = kept(started)
        try:
            yield db
        finally:
            db.close()


def worker_database(dsn: str) -> str:
    """BENCH_TEST_DSN itself, or for a parallel worker a database of its own beside it (created if missing)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return dsn
    url = urlsplit(dsn)
    name = f"{url.path.lstrip('/') or 'insertbench'}_{worker}"
    server = Database(dsn=dsn, embedded=False)
    if not server.fetch("SELECT 1 FROM pg_database WHERE datname = $1", name):
        server.fetch(f'CREATE DATABASE "{name}"')
    return url._replace(path=f"/{name}").geturl()


# --- parallel workers (pytest-xdist) ---------------------------------------------------------------------
# Each worker is a session of its own, with an embedded PostgreSQL of its own: a test that counts the rows of
# the whole table sees only its worker's. A test marked `alone` runs while the other workers wait between two
# tests: it times something, or looks at every process or temporary directory on the machine.


class Turns:
    """A readers-writer lock between workers, on two files: every test holds ``room`` shared, an `alone` test
    holds it exclusively; ``gate`` lets an `alone` test in before the other workers' next tests."""

    def __init__(self, directory: Path) -> None:
        self.gate = open(directory / "alone.gate", "a")  # noqa: SIM115 (held for the whole session)
        self.room = open(directory / "alone.room", "a")  # noqa: SIM115

    @contextlib.contextmanager
    def turn(self, alone: bool) -> Iterator[None]:
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(self.gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self.room, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(self.gate, fcntl.LOCK_UN)


@pytest.hookimpl(trylast=True)  # after pytest's own order (a module's tests grouped by their fixtures' params)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `alone` tests first: each waits for the other worker's current test to end, and that worker then waits
    for it. Met in the middle of the run, they waited there for tests of 20-30 s (valgrind, a whole harness run);
    first, the other worker is in the conformance cases, a second or less each. xdist hands out the order as
    it is (the first half to one worker, the second to the other, stealing from the end), on every worker alike."""
    items[:] = sorted(items, key=lambda item: item.get_closest_marker("alone") is None)


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and workerinput.get("workercount", 1) > 1:
        config.stash[TURNS] = Turns(Path(config.option.basetemp).parent)  # the run's, shared by its workers


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    turns = item.config.stash.get(TURNS, None)
    if turns is None:
        return (yield)
    with turns.turn(item.get_closest_marker("alone") is not None):
        return (yield)


TURNS = pytest.StashKey[Turns]()
