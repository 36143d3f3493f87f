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
(BENCH_ACQUIRE_TIMEOUT) for one, then 503, and PostgreSQL gives each statement `statement_timeout`
(BENCH_STATEMENT_TIMEOUT, set as each connection opens: `options=-c statement_timeout=…`). A connection PostgreSQL
dropped is discarded when it comes back and replaced in the background, which gives up after a second
(`reconnect_timeout`): then a request waiting for a connection makes a new one at once. psycopg refuses a text
holding NUL before sending it (its `DataError`, no SQLSTATE) and Python one holding a lone surrogate
(UnicodeEncodeError): both are the row's fault, 422, as PostgreSQL's own SQLSTATE 22 and 23 are.

Knob (apps/_db `KNOBS`): `BENCH_TRANSACTION=1` runs `insert_one` and `insert_many` inside a transaction, BEGIN,
INSERT, COMMIT, as SQLAlchemy's `engine.begin()` sends them, so this layer and `core` over psycopg can be
compared at equal statements:

    async with pool.connection() as conn, conn.transaction():
        row_id = (await (await conn.execute(INSERT_ONE, (text,))).fetchone())[0]
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool

from apps._db.base import (
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    PSYCOPG_RECONNECT_TIMEOUT,
    classify,
    milliseconds,
    transaction_if,
)

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

    def __init__(self, dsn: str, pool_size: int, *, acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
                 statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT, transaction: bool = False) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._acquire_timeout = acquire_timeout
        self._options = {"options": f"-c statement_timeout={milliseconds(statement_timeout)}"}
        self._transaction = transaction
        self._pool: AsyncConnectionPool | None = None
        self.ready = False

    async def start(self) -> None:
        try:
            # One connection first: an unreachable database fails here at once with its reason, where the pool
            # would retry until its timeout.
            await (await psycopg.AsyncConnection.connect(self._dsn, **self._options)).close()
            self._pool = AsyncConnectionPool(self._dsn, min_size=self._pool_size, max_size=self._pool_size,
                                             kwargs={"autocommit": True, **self._options}, open=False,
                                             timeout=self._acquire_timeout,
                                             reconnect_timeout=PSYCOPG_RECONNECT_TIMEOUT)
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
            async with self._pool.connection() as conn, transaction_if(self._transaction, conn):
                return await _insert_one(conn, text)
        except PSYCOPG_ERRORS as exc:
            raise classify(exc) from exc

    async def insert_many(self, texts: Sequence[str]) -> list[int]:
        try:
            async with self._pool.connection() as conn, transaction_if(self._transaction, conn):
                rows = await (await conn.execute(INSERT_MANY, (list(texts),))).fetchall()
        except PSYCOPG_ERRORS as exc:
            raise classify(exc) from exc
        return sorted(row[0] for row in rows)

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
