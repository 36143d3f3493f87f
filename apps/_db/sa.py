"""What the two SQLAlchemy layers share: the engine they run on and the errors they translate."""

from __future__ import annotations

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# DBAPIError wraps every asyncpg error (its `.orig.sqlstate` says which); TimeoutError is the pool's own;
# a refused connection surfaces as a bare OSError.
SQLALCHEMY_ERRORS = (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError, OSError)


def create_engine(dsn: str, pool_size: int) -> AsyncEngine:
    """An AsyncEngine over asyncpg holding at most `pool_size` connections (as the asyncpg layer does)."""
    url = "postgresql+asyncpg://" + dsn.split("://", 1)[1]
    return create_async_engine(url, pool_size=pool_size, max_overflow=0)
