"""The `asyncpg` layer: an asyncpg pool and one `INSERT … RETURNING id` in autocommit per insert.

One round trip and one statement per insert (the pool's reset query is switched off, see `keep_session`);
a bulk insert is one statement, hence one implicit transaction: all rows or none. `insert_each` runs one
INSERT per row on one connection inside `conn.transaction()`: BEGIN, N INSERTs, COMMIT.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from apps._db.base import ASYNCPG_ERRORS, INSERT_MANY, INSERT_ONE, classify, keep_session


class AsyncpgPool:
    needs_dsn = True

    def __init__(self, dsn: str, pool_size: int) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self.ready = False

    async def start(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._pool_size, max_size=self._pool_size, reset=keep_session
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
            return await self._pool.fetchval(INSERT_ONE, text)
        except ASYNCPG_ERRORS as exc:
            raise classify(exc) from exc

    async def insert_many(self, texts: Sequence[str]) -> list[int]:
        try:
            records = await self._pool.fetch(INSERT_MANY, list(texts))
        except ASYNCPG_ERRORS as exc:
            raise classify(exc) from exc
        return sorted(record[0] for record in records)

    async def insert_each(self, texts: Sequence[str]) -> list[int]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return [await conn.fetchval(INSERT_ONE, text) for text in texts]
        except ASYNCPG_ERRORS as exc:
            raise classify(exc) from exc
