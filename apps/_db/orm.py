"""The `orm` layer: an AsyncSession per request from `async_sessionmaker`, inside `session.begin()`.

What the original service does: BEGIN, INSERT … RETURNING id, COMMIT (three statements) around a mapped
`SimpleText` object; a bulk insert adds all objects to one session, flushed as one INSERT. `insert_each`
is the unit of work an app that adds rows one by one runs: one session, `session.begin()`, and per row
`session.add()` + `await session.flush()` to read its id: BEGIN, N INSERTs, COMMIT.

Knobs (`apps._db.sa` says what each does): `BENCH_AUTOCOMMIT=1` gives `insert_one` and `insert_many` sessions
bound to the engine's autocommit copy, so the flush's INSERT is the only statement,

    writes = async_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
    async with writes.begin() as session:
        session.add(SimpleText(text=text))

while `insert_each` keeps its transaction; `BENCH_PRE_PING=1` is `pool_pre_ping=True`, `BENCH_SA_DRIVER=psycopg`
a `postgresql+psycopg://` URL.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, String
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from apps._db.base import classify
from apps._db.sa import SQLALCHEMY_ERRORS, EngineLayer


class Base(DeclarativeBase):
    pass


class SimpleText(Base):
    __tablename__ = "simple_text"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    text: Mapped[str] = mapped_column(String(1000))


class Orm(EngineLayer):
    def __init__(self, dsn: str, pool_size: int, **knobs: bool | str) -> None:
        super().__init__(dsn, pool_size, **knobs)
        # expire_on_commit=False: the ids stay readable after commit without another query.
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        self._writes = async_sessionmaker(self._writer, expire_on_commit=False)  # the same, unless autocommit

    async def insert_one(self, text: str) -> int:
        row = SimpleText(text=text)
        await self._commit([row])
        return row.id

    async def insert_many(self, texts: Sequence[str]) -> list[int]:
        rows = [SimpleText(text=text) for text in texts]
        await self._commit(rows)
        return [row.id for row in rows]

    async def insert_each(self, texts: Sequence[str]) -> list[int]:
        ids = []
        try:
            async with self._sessions.begin() as session:
                for text in texts:
                    row = SimpleText(text=text)
                    session.add(row)
                    await session.flush()
                    ids.append(row.id)
        except SQLALCHEMY_ERRORS as exc:
            raise classify(exc) from exc
        return ids

    async def _commit(self, rows: list[SimpleText]) -> None:
        try:
            async with self._writes.begin() as session:
                session.add_all(rows)
        except SQLALCHEMY_ERRORS as exc:
            raise classify(exc) from exc
