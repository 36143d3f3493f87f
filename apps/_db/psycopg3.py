"""The `psycopg` layer: raw psycopg 3 on a `psycopg_pool.AsyncConnectionPool` of autocommit connections.

What the `asyncpg` layer does, with the other driver: one `INSERT … RETURNING id` in autocommit per insert,
one statement and one round trip; a bulk insert is one `INSERT … SELECT unnest(%s::text[]) …` statement, all
rows or none; `insert_each` one INSERT per row on one connection inside `conn.transaction()`: BEGIN, N
INSERTs, COMMIT. psycopg binds the `%s` parameters server-side (PostgreSQL sees `$1`), and prepares a query
once a connection has run it five times (its `prepare_threshold`).

    pool = AsyncConnectionPool(dsn, min_size=20, max_size=20, kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True)
    async with pool.connection() as conn:
        row_id = (await (await conn.execute(INSERT_ONE, (text,))).fetchone())[0]

The pool holds BENCH_POOL_SIZE connections, all opened at start; a request waits at most the pool's `timeout`
(30 s) for one (then 503); a connection PostgreSQL dropped is discarded when it comes back and replaced in the
background. psycopg refuses a text holding NUL before sending it (its `DataError`, no SQLSTATE) and Python
one holding a lone surrogate (UnicodeEncodeError): both are the row's fault, 422, as PostgreSQL's own
SQLSTATE 22 and 23 are.

Knob (apps/_db `KNOBS`): `BENCH_TRANSACTION=1` runs `insert_one` and `insert_many` inside a transaction, BEGIN,
INSERT, COMMIT, as SQLAlchemy's `engine.begin()` sends them, so this layer and `core` over psycopg can be
compared at equal statements:

    async with pool.connection() as conn, conn.transaction():
        row_id = (await (await conn.execute(INSERT_ONE, (text,))).fetchone())[0]
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext

import psycopg
from psycopg_pool import AsyncConnectionPool

from apps._db.base import classify

INSERT_ONE = "INSERT INTO simple_text (text) VALUES (%s) RETURNING id"
# base.INSERT_MANY in psycopg's parameter style: ids rise in input order (see there)
INSERT_MANY = """INSERT INTO simple_text (text)
SELECT t FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n
RETURNING id"""

# Errors raised by psycopg or its pool (PoolTimeout is an OperationalError), by Python encoding a text, or by
# the network underneath.
PSYCOPG_ERRORS = (psycopg.Error, UnicodeEncodeError, OSError)


class PsycopgPool:
    needs_dsn = True

    def __init__(self, dsn: str, pool_size: int, *, transaction: bool = False) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._transaction = transaction
        self._pool: AsyncConnectionPool | None = None
        self.ready = False

    async def start(self) -> None:
        try:
            # One connection first: an unreachable database fails here at once with its reason, where the pool
            # would retry until its timeout.
            await (await psycopg.AsyncConnection.connect(self._dsn)).close()
            self._pool = AsyncConnectionPool(self._dsn, min_size=self._pool_size, max_size=self._pool_size,
                                             kwargs={"autocommit": True}, open=False)
            await self._pool.open(wait=True)
        except PSYCOPG_ERRORS as exc:
            raise classify(exc) from exc
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._pool is not None:
            await self._pool.close()

    async def insert_one(self, text: str) -> int:
        try:
            async with self._pool.connection() as conn, self._maybe_transaction(conn):
                return await _insert_one(conn, text)
        except PSYCOPG_ERRORS as exc:
            raise classify(exc) from exc

    async def insert_many(self, texts: Sequence[str]) -> list[int]:
        try:
            async with self._pool.connection() as conn, self._maybe_transaction(conn):
                rows = await (await conn.execute(INSERT_MANY, (list(texts),))).fetchall()
        except PSYCOPG_ERRORS as exc:
            raise classify(exc) from exc
        return sorted(row[0] for row in rows)

    def _maybe_transaction(self, conn: psycopg.AsyncConnection) -> AbstractAsyncContextManager:
        """BEGIN … COMMIT around the block with the knob, nothing (autocommit) without it."""
        return conn.transaction() if self._transaction else nullcontext()

    async def insert_each(self, texts: Sequence[str]) -> list[int]:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                return [await _insert_one(conn, text) for text in texts]
        except PSYCOPG_ERRORS as exc:
            raise classify(exc) from exc


async def _insert_one(conn: psycopg.AsyncConnection, text: str) -> int:
    cursor = await conn.execute(INSERT_ONE, (text,))
    (row_id,) = await cursor.fetchone()
    return row_id
