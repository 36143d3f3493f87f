"""Shared fixtures: one real embedded PostgreSQL for the whole test session, read over one kept connection."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import Iterator

import asyncpg
import pytest

from harness._postgres import Database, embedded


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
        from harness._postgres import existing

        db = kept(existing(dsn))
        yield db
        db.close()
        return
    with embedded() as started:
        db = kept(started)
        try:
            yield db
        finally:
            db.close()

