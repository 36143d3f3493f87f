"""The `asyncpg` layer: an asyncpg pool and one `INSERT … RETURNING id` in autocommit per insert.

One round trip and one statement per insert (the pool's reset query is switched off, see `keep_session`);
a bulk insert is one statement, hence one implicit transaction: all rows or none. `insert_each` runs one
INSERT per row on one connection inside `conn.transaction()`: BEGIN, N INSERTs, COMMIT.

Knobs (apps/_db `KNOBS`), each the lines shown in a user's app:

- `BENCH_TRANSACTION=1`: `insert_one` and `insert_many` inside a transaction, BEGIN, INSERT, COMMIT, as
  SQLAlchemy's `engine.begin()` sends them, so this layer and `core` can be compared at equal statements:

      async with pool.acquire() as conn, conn.transaction():
          row_id = await conn.fetchval(INSERT_ONE, text)

- `BENCH_POOL_RESET=1`: the pool with asyncpg's default reset, `asyncpg.create_pool(dsn)` without
  `reset=keep_session`: on every release asyncpg sends, in one round trip, the reset query
  `Connection.get_reset_query()` makes of what the server supports, `SELECT pg_advisory_unlock_all(); CLOSE ALL;
  UNLISTEN *; RESET ALL;` (four statements; a ROLLBACK first if a transaction was left open).

Bounds (apps/_db: BENCH_ACQUIRE_TIMEOUT, BENCH_STATEMENT_TIMEOUT): a request waits at most `acquire_timeout`
for a connection (which covers opening one in place of one PostgreSQL dropped), and PostgreSQL gives each
statement `statement_timeout`, set once per connection; past either, 503 (`base.pooled`):

    pool = await asyncpg.create_pool(dsn, server_settings={"statement_timeout": "30000"})
    async with asyncio.timeout(10):
        conn = await pool.acquire()
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from apps._db.base import (
    ASYNCPG_ERRORS,
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    INSERT_MANY,
    INSERT_ONE,
    classify,
    keep_session,
    milliseconds,
    pooled,
    transaction_if,
)


class AsyncpgPool:
    needs_dsn = True

    def __init__(self, dsn: str, pool_size: int, *, acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
                 statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
                 transaction: bool = False, pool_reset: bool = False) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._acquire_timeout = acquire_timeout
        self._statement_timeout = statement_timeout
        self._transaction = transaction
        self._reset = None if pool_reset else keep_session  # None: asyncpg's own reset
        self._pool: asyncpg.Pool | None = None
        self.ready = False

    async def start(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._pool_size, max_size=self._pool_size, reset=self._reset,
                server_settings={"statement_timeout": milliseconds(self._statement_timeout)},
            )
        except ASYNCPG_ERRORS as exc:
            raise classify(exc) from exc
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._pool is not None:
            await self._pool.close()

    async def insert_one(self, text: str) -> int:
        try:
            async with pooled(self._pool, self._acquire_timeout) as conn, transaction_if(self._transaction, conn):
                return await conn.fetchval(INSERT_ONE, text)
        except ASYNCPG_ERRORS as exc:
            raise classify(exc) from exc

    async def insert_many(self, texts: Sequence[str]) -> list[int]:
        try:
            async with pooled(self._pool, self._acquire_timeout) as conn, transaction_if(self._transaction, conn):
                records = await conn.fetch(INSERT_MANY, list(texts))
        except ASYNCPG_ERRORS as exc:
            raise classify(exc) from exc
        return sorted(record[0] for record in records)

    async def insert_each(self, texts: Sequence[str]) -> list[int]:
        try:
            async with pooled(self._pool, self._acquire_timeout) as conn, conn.transaction():
                return [await conn.fetchval(INSERT_ONE, text) for text in texts]
        except ASYNCPG_ERRORS as exc:
            raise classify(exc) from exc
