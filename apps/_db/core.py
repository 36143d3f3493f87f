"""The `core` layer: SQLAlchemy Core on an AsyncEngine, `async with engine.begin()` per request.

BEGIN, INSERT … RETURNING id, COMMIT: three statements per request; a bulk insert is one INSERT whose
RETURNING rows SQLAlchemy puts back in parameter order; `insert_each` is one INSERT per row inside one
`engine.begin()`: BEGIN, N INSERTs, COMMIT.

Knobs (`apps._db.sa` says what each does): `BENCH_AUTOCOMMIT=1` runs `insert_one` and `insert_many` on the
engine's autocommit copy, one statement each,

    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.begin() as conn:
        await conn.execute(insert(simple_text).returning(simple_text.c.id), {"text": text})

`BENCH_PRE_PING=1` is `pool_pre_ping=True`, `BENCH_SA_DRIVER=psycopg` a `postgresql+psycopg://` URL.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, MetaData, String, Table, insert

from apps._db.base import classify
from apps._db.sa import SQLALCHEMY_ERRORS, EngineLayer

metadata = MetaData()
simple_text = Table(
    "simple_text",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("text", String(1000), nullable=False),
)


class Core(EngineLayer):
    async def insert_one(self, text: str) -> int:
        statement = insert(simple_text).returning(simple_text.c.id)
        try:
            async with self._writer.begin() as conn:
                result = await conn.execute(statement, {"text": text})
                return result.scalar_one()
        except SQLALCHEMY_ERRORS as exc:
            raise classify(exc) from exc

    async def insert_many(self, texts: Sequence[str]) -> list[int]:
        statement = insert(simple_text).returning(simple_text.c.id, sort_by_parameter_order=True)
        try:
            async with self._writer.begin() as conn:
                result = await conn.execute(statement, [{"text": text} for text in texts])
                return list(result.scalars())
        except SQLALCHEMY_ERRORS as exc:
            raise classify(exc) from exc

    async def insert_each(self, texts: Sequence[str]) -> list[int]:
        statement = insert(simple_text).returning(simple_text.c.id)
        try:
            async with self._engine.begin() as conn:
                return [(await conn.execute(statement, {"text": text})).scalar_one() for text in texts]
        except SQLALCHEMY_ERRORS as exc:
            raise classify(exc) from exc
