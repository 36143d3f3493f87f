"""What every database layer shares: the interface, the errors an app turns into responses, the SQL."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Protocol

import asyncpg

# One round trip, one statement: the row and its id.
INSERT_ONE = "INSERT INTO simple_text (text) VALUES ($1) RETURNING id"

# Many rows in one statement. Rows are produced in ordinality order and PostgreSQL evaluates the id default
# (nextval) as each row is produced, so ids rise in input order; callers sort the returned ids and pair
# them with the texts in order (the same technique SQLAlchemy's "insertmanyvalues" uses on PostgreSQL).
INSERT_MANY = """INSERT INTO simple_text (text)
SELECT t FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n
RETURNING id"""

DEFAULT_ACQUIRE_TIMEOUT = 10.0  # seconds a request waits for a free connection (BENCH_ACQUIRE_TIMEOUT)
DEFAULT_STATEMENT_TIMEOUT = 30.0  # seconds PostgreSQL gives one statement (BENCH_STATEMENT_TIMEOUT)
# How long psycopg's pool keeps re-making a connection it lost before it gives up (its `reconnect_timeout`, 5 min by
# default, with back-off: 1, 2, 4 … s between tries); given up, a request that then waits for one makes another at
# once, so a database back from an outage is used within about this long instead of the next try's wait.
PSYCOPG_RECONNECT_TIMEOUT = 1.0

# Errors raised by the driver itself or by the network underneath it. InternalClientError is asyncpg's own state
# gone wrong: a connection PostgreSQL terminated while it sat idle in the pool, handed out before asyncpg saw it
# close, fails with "cannot switch to state …; another operation … is in progress".
ASYNCPG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)

# SQLSTATE classes meaning "this row is wrong", not "the database is in trouble":
# 22 data exception (e.g. a NUL character in text), 23 integrity constraint violation.
_REJECTED_ROW_CLASSES = ("22", "23")


class ConfigError(RuntimeError):
    """The BENCH_* environment does not describe a layer that can run."""


class DatabaseError(Exception):
    """A database failure an app answers with `status_code` and a JSON body holding `str(error)`."""

    status_code: ClassVar[int] = 503


class RowRejected(DatabaseError):
    """PostgreSQL refused the row itself; the request is wrong, the database is fine."""

    status_code = 422


class DatabaseUnavailable(DatabaseError):
    """The database could not be reached or failed for a reason unrelated to the row."""

    status_code = 503


def classify(exc: BaseException) -> DatabaseError:
    """The DatabaseError an app should report for a driver (asyncpg, psycopg, or either under SQLAlchemy) exception."""
    error = _driver_error(exc)
    if _rejects_the_row(error):
        return RowRejected(f"PostgreSQL rejected the row: {error}")
    return DatabaseUnavailable(f"database unavailable: {type(error).__name__}: {str(error) or 'timed out'}")


def _rejects_the_row(error: BaseException) -> bool:
    """Whether `error` is about the row: SQLSTATE class 22 or 23 from PostgreSQL (asyncpg gives its own refusals
    of an argument 22000 too), or a text the driver refused before sending it, which psycopg reports without a
    SQLSTATE: a `DataError` (a NUL character) or Python's own UnicodeEncodeError (a lone surrogate)."""
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate:
        return sqlstate[:2] in _REJECTED_ROW_CLASSES
    psycopg = sys.modules.get("psycopg")  # loaded if a layer uses it; never imported for the others
    refused = (psycopg.DataError, psycopg.IntegrityError) if psycopg else ()
    return isinstance(error, (UnicodeEncodeError, *refused))


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrappers, or `exc`: `DBAPIError.orig`, which is psycopg's own
    exception, or for asyncpg the adapter's, raised from asyncpg's (its cause)."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return exc
    if type(orig).__module__.startswith("psycopg"):
        return orig
    return orig.__cause__ or orig


def milliseconds(seconds: float) -> str:
    """PostgreSQL's `statement_timeout` for a bound in seconds: whole milliseconds, at least one (0 would be none).

    Set when a connection opens (asyncpg `server_settings`, libpq `options=-c statement_timeout=…`), it costs no
    statement per insert; a statement past it is cancelled by PostgreSQL itself (SQLSTATE 57014), so it is known
    not to have written its row: the request fails with DatabaseUnavailable (503)."""
    return str(max(1, round(seconds * 1000)))


@contextlib.asynccontextmanager
async def pooled(pool: asyncpg.Pool, timeout: float) -> AsyncIterator[asyncpg.Connection]:
    """A connection of `pool` for the block, waited for at most `timeout` seconds, then DatabaseUnavailable.

    `asyncio.timeout` around `pool.acquire()` rather than `acquire(timeout=…)`, which before Python 3.12 runs the
    wait in a task of its own and bounds the release (its reset) as well."""
    try:
        async with asyncio.timeout(timeout):
            conn = await pool.acquire()
    except TimeoutError:
        raise DatabaseUnavailable(f"database unavailable: no connection free within {timeout:g} s") from None
    try:
        yield conn
    finally:
        await pool.release(conn)


def transaction_if(wanted: bool, conn: asyncpg.Connection) -> contextlib.AbstractAsyncContextManager:
    """BEGIN … COMMIT around the block if `wanted` (the BENCH_TRANSACTION knob), nothing (autocommit) if not; for
    an asyncpg or a psycopg connection alike."""
    return conn.transaction() if wanted else contextlib.nullcontext()


async def keep_session(connection: asyncpg.Connection) -> None:
    """A pool `reset` that sends nothing.

    asyncpg's default reset runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on
    every release: a second statement and round trip per insert. These layers never leave session state
    behind (autocommit, no LISTEN, locks, cursors or SET), and asyncpg still rolls back a stray transaction.
    """


class Layer(Protocol):
    """A database layer: what an app calls, whatever sits underneath."""

    ready: bool  # True between a successful start() and stop(); GET /health answers 200 only then

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def insert_one(self, text: str) -> int: ...

    async def insert_many(self, texts: Sequence[str]) -> list[int]: ...

    async def insert_each(self, texts: Sequence[str]) -> list[int]: ...
