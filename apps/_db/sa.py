"""What the two SQLAlchemy layers share: the engine they run on, its start and stop, and the errors they translate."""

from __future__ import annotations

import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from apps._db.base import classify

# DBAPIError wraps every asyncpg error (its `.orig.sqlstate` says which); TimeoutError is the pool's own;
# a refused connection surfaces as a bare OSError.
SQLALCHEMY_ERRORS = (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError, OSError)


def create_engine(dsn: str, pool_size: int) -> AsyncEngine:
    """An AsyncEngine over asyncpg holding at most `pool_size` connections (as the asyncpg layer does)."""
    url = "postgresql+asyncpg://" + dsn.split("://", 1)[1]
    return create_async_engine(url, pool_size=pool_size, max_overflow=0)


class EngineLayer:
    """A layer on an AsyncEngine: made without I/O, ready once one connection has answered."""

    needs_dsn = True

    def __init__(self, dsn: str, pool_size: int) -> None:
        self._engine = create_engine(dsn, pool_size)
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
