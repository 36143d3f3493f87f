"""The `core` layer: SQLAlchemy Core on an AsyncEngine, `async with engine.begin()` per request.

BEGIN, INSERT … RETURNING id, COMMIT: three statements per request; a bulk insert is one INSERT whose
RETURNING rows SQLAlchemy puts back in parameter order.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, MetaData, String, Table, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from apps._db.base import classify
from apps._db.sa import SQLALCHEMY_ERRORS, create_engine

metadata = MetaData()
simple_text = Table(
    "simple_text",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("text", String(1000), nullable=False),
)


class Core:
    needs_dsn = True

    def __init__(self, dsn: str, pool_size: int) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._engine: AsyncEngine | None = None
        self.ready = False

    async def start(self) -> None:
        self._engine = create_engine(self._dsn, self._pool_size)
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except SQLALCHEMY_ERRORS as exc:
            raise classify(exc) from exc
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._engine is not None:
            await self._engine.dispose()

    async def insert_one(self, text: str) -> int:
        statement = insert(simple_text).returning(simple_text.c.id)
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(statement, {"text": text})
                return result.scalar_one()
        except SQLALCHEMY_ERRORS as exc:
            raise classify(exc) from exc

    async def insert_many(self, texts: Sequence[str]) -> list[int]:
        statement = insert(simple_text).returning(simple_text.c.id, sort_by_parameter_order=True)
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(statement, [{"text": text} for text in texts])
                return list(result.scalars())
        except SQLALCHEMY_ERRORS as exc:
            raise classify(exc) from exc
