"""What the two SQLAlchemy layers share: the engine they run on, its start and stop, and the errors they translate.

The knobs both layers take (apps/_db `KNOBS`; each is the line shown, in a user's app):

- `BENCH_SA_DRIVER=psycopg`: SQLAlchemy over psycopg 3's async support instead of asyncpg (the default),
  `create_async_engine("postgresql+psycopg://user:password@host/db", ...)`;
- `BENCH_PRE_PING=1`: `create_async_engine(url, pool_pre_ping=True)`, a ping on every checkout from the pool,
  which replaces a connection PostgreSQL dropped while it was idle instead of failing the request. Over asyncpg
  SQLAlchemy sends it as BEGIN, `;`, ROLLBACK (three round trips; before the checkout turns to autocommit, so
  with BENCH_AUTOCOMMIT=1 too); over psycopg as `;` in autocommit (one round trip, no statement);
- `BENCH_AUTOCOMMIT=1`: single-statement writes (`insert_one`, `insert_many`) on
  `engine.execution_options(isolation_level="AUTOCOMMIT")`, a copy of the engine sharing its pool whose
  connections the driver leaves in autocommit: the same `begin()` block then sends the INSERT alone, one
  statement instead of BEGIN, INSERT, COMMIT (a single statement is atomic by itself). `insert_each` keeps the
  engine's transaction: its N rows stay all or none.

Bounds (apps/_db: BENCH_ACQUIRE_TIMEOUT, BENCH_STATEMENT_TIMEOUT): the pool's `pool_timeout` for a checkout, and
PostgreSQL's `statement_timeout` set on each connection as it opens, through the driver's own connect arguments:

    create_async_engine(url, pool_timeout=10, connect_args={"server_settings": {"statement_timeout": "30000"}})
    create_async_engine(psycopg_url, pool_timeout=10, connect_args={"options": "-c statement_timeout=30000"})
"""

from __future__ import annotations

import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from apps._db.base import DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT, classify, milliseconds

# DBAPIError wraps every driver error (its `.orig` says which); TimeoutError is the pool's own; a refused
# connection surfaces as a bare OSError; psycopg lets a text it cannot encode (a lone surrogate) raise
# Python's UnicodeEncodeError before anything is sent.
SQLALCHEMY_ERRORS = (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError, OSError, UnicodeEncodeError)


def create_engine(dsn: str, pool_size: int, *, acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
                  statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT, sa_driver: str = "asyncpg",
                  pre_ping: bool = False) -> AsyncEngine:
    """An AsyncEngine over `sa_driver` holding at most `pool_size` connections (as the asyncpg layer does)."""
    url = f"postgresql+{sa_driver}://" + dsn.split("://", 1)[1]
    timeout = milliseconds(statement_timeout)
    connect_args = ({"server_settings": {"statement_timeout": timeout}} if sa_driver == "asyncpg"
                    else {"options": f"-c statement_timeout={timeout}"})
    return create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_pre_ping=pre_ping,
                               pool_timeout=acquire_timeout, connect_args=connect_args)


class EngineLayer:
    """A layer on an AsyncEngine: made without I/O, ready once one connection has answered.

    `self._engine` runs transactions; `self._writer` is the engine single-statement writes run on: the same one,
    or with BENCH_AUTOCOMMIT=1 its autocommit copy.
    """

    needs_dsn = True

    def __init__(self, dsn: str, pool_size: int, *, acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
                 statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT, sa_driver: str = "asyncpg",
                 pre_ping: bool = False, autocommit: bool = False) -> None:
        self._engine = create_engine(dsn, pool_size, acquire_timeout=acquire_timeout,
                                     statement_timeout=statement_timeout, sa_driver=sa_driver, pre_ping=pre_ping)
        self._writer = self._engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else self._engine
        self.ready = False

    async def start(self) -> None:
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except SQLALCHEMY_ERRORS as exc:
            raise classify(exc) from exc
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self._engine.dispose()
