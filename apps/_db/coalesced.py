"""The `coalesced` layer: every insert in flight written by one statement per event-loop turn.

A request queues its texts and awaits a future. The first request of a loop turn schedules a flush with
`loop.call_soon` (never a timer: a lone request on an idle loop is written at the next turn); the flush
takes the queue, up to `max_batch_rows` rows, and writes it as one `INSERT … SELECT unnest($1)` in
autocommit; each future gets its ids, in order, once that statement has committed. Up to `max_in_flight`
statements run at once over as many connections, so while one batch is in PostgreSQL the loop keeps
sending the requests that piled up; when all are busy, the queue waits for the next free connection.

If PostgreSQL rejects a batch because of a row, each request's rows are retried as a statement of their
own, so only the request holding the bad row fails (a bulk request stays all or none).

The queue is bounded, so a stalled database answers 503 instead of growing memory: a request that would
take it past `max_queued_rows` fails at once, and a request still queued (every connection busy) after
`acquire_timeout` seconds (BENCH_ACQUIRE_TIMEOUT; `queue_timeout`) fails then; both with DatabaseUnavailable.
A statement already sent is left to PostgreSQL, which cancels it past `statement_timeout`
(BENCH_STATEMENT_TIMEOUT, set on each connection): its requests wait for its outcome, all of them answered alike
(a cancelled statement wrote none of their rows).

`insert_each`, the shape where an app inserts its rows one by one, is N `insert_one` calls awaited together
(`asyncio.gather`): the batching is this layer's way of doing them, so the rows are written with whatever
else is in flight, usually in one statement, and no transaction spans the request's rows. If PostgreSQL
rejects one of them, that request fails (422) but its other rows are written (each row is a request of its
own to the coalescer); a request that fails for want of the database (503) may have some rows written.

Knob (apps/_db `KNOBS`): `BENCH_POOL_RESET=1` makes the pool with asyncpg's default reset,
`asyncpg.create_pool(dsn, min_size=4, max_size=4)` without `reset=keep_session`: on every release, once per
batch here, asyncpg sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;` in one round trip
(four statements; `Connection.get_reset_query()`, from what the server supports).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial

import asyncpg

from apps._db.base import (
    ASYNCPG_ERRORS,
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    INSERT_MANY,
    DatabaseUnavailable,
    RowRejected,
    classify,
    keep_session,
    milliseconds,
    pooled,
)

Pending = tuple[list[str], asyncio.Future, float]  # one request: its texts, the future awaiting their ids, queued at


class Coalesced:
    needs_dsn = True

    def __init__(self, dsn: str, pool_size: int, *, acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
                 statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
                 max_batch_rows: int = 1000, max_in_flight: int = 4, max_queued_rows: int = 10_000,
                 pool_reset: bool = False) -> None:
        self._dsn = dsn
        self._statement_timeout = statement_timeout
        self._reset = None if pool_reset else keep_session  # None: asyncpg's own reset
        self._max_in_flight = min(pool_size, max_in_flight)
        self.max_batch_rows = max_batch_rows
        self.max_queued_rows = max_queued_rows
        self.queue_timeout = acquire_timeout
        self._queue: deque[Pending] = deque()
        self._queued_rows = 0
        self._flush_scheduled = False
        self._expiry: asyncio.TimerHandle | None = None
        self._writers: set[asyncio.Task] = set()
        self._pool: asyncpg.Pool | None = None
        self.ready = False
        self.statements = 0  # INSERT statements sent, retries included
        self.rows = 0  # rows those statements wrote

    @property
    def in_flight(self) -> int:
        """Batches written right now."""
        return len(self._writers)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        size = self._max_in_flight
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=size, max_size=size, reset=self._reset,
                server_settings={"statement_timeout": milliseconds(self._statement_timeout)},
            )
        except ASYNCPG_ERRORS as exc:
            raise classify(exc) from exc
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._expiry is not None:
            self._expiry.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()

    async def insert_one(self, text: str) -> int:
        (row_id,) = await self._submit([text])
        return row_id

    async def insert_many(self, texts: Sequence[str]) -> list[int]:
        if len(texts) > self.max_batch_rows:
            raise ValueError(f"at most {self.max_batch_rows} rows per call, got {len(texts)}")
        return await self._submit(list(texts)) if texts else []

    async def insert_each(self, texts: Sequence[str]) -> list[int]:
        return list(await asyncio.gather(*(self.insert_one(text) for text in texts)))

    def _submit(self, texts: list[str]) -> asyncio.Future:
        if self._queued_rows + len(texts) > self.max_queued_rows:
            raise DatabaseUnavailable(f"{self._queued_rows} rows already wait for the database; try again later")
        future = self._loop.create_future()
        self._queue.append((texts, future, self._loop.time()))
        self._queued_rows += len(texts)
        self._schedule_flush()
        return future

    def _schedule_flush(self) -> None:
        if len(self._writers) >= self._max_in_flight:
            self._watch_queue()  # every connection is busy: the queue waits for one, but not forever
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _watch_queue(self) -> None:
        """Fail the oldest queued request once it has waited `queue_timeout` (one timer at a time)."""
        if self._expiry is None and self._queue:
            self._expiry = self._loop.call_at(self._queue[0][2] + self.queue_timeout, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        waited_since = self._loop.time() - self.queue_timeout
        while self._queue and self._queue[0][2] <= waited_since:
            texts, future, _ = self._queue.popleft()
            self._queued_rows -= len(texts)
            if not future.done():
                future.set_exception(DatabaseUnavailable(f"no database connection free for {self.queue_timeout} s"))
        self._watch_queue()

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch = self._take_batch()
        if batch:
            writer = self._loop.create_task(self._write(batch))
            self._writers.add(writer)
            writer.add_done_callback(self._writer_done)
        if self._queue:
            self._schedule_flush()

    def _take_batch(self) -> list[Pending]:
        batch: list[Pending] = []
        rows = 0
        while self._queue and rows + len(self._queue[0][0]) <= self.max_batch_rows:
            request = self._queue.popleft()
            self._queued_rows -= len(request[0])
            if not request[1].done():  # a cancelled request (client gone) is not written
                batch.append(request)
                rows += len(request[0])
        return batch

    def _writer_done(self, writer: asyncio.Task) -> None:
        self._writers.discard(writer)
        if self._queue:
            self._schedule_flush()

    async def _write(self, batch: list[Pending]) -> None:
        try:
            async with pooled(self._pool, self.queue_timeout) as conn:
                await self._write_batch(conn, batch)
        except DatabaseUnavailable as exc:  # no connection in time (a new one could not be opened)
            _fail(batch, partial(DatabaseUnavailable, str(exc)))
        except ASYNCPG_ERRORS as exc:
            _fail(batch, partial(classify, exc))
        finally:  # whatever went wrong, no request is left waiting
            _fail(batch, partial(DatabaseUnavailable, "the writer stopped before this row was written"))

    async def _write_batch(self, conn: asyncpg.Connection, batch: list[Pending]) -> None:
        try:
            ids = await self._insert(conn, [text for texts, *_ in batch for text in texts])
        except RowRejected as exc:
            if len(batch) == 1:
                _fail(batch, partial(RowRejected, str(exc)))
                return
            for request in batch:  # one bad row spoiled the statement: find whose it is
                await self._write_batch(conn, [request])
            return
        _resolve(batch, ids)

    async def _insert(self, conn: asyncpg.Connection, texts: list[str]) -> list[int]:
        """One statement, committed on return; ids in the order of `texts`."""
        self.statements += 1
        try:
            records = await conn.fetch(INSERT_MANY, texts)
        except asyncpg.PostgresError as exc:
            error = classify(exc)
            if isinstance(error, RowRejected):
                raise error from exc
            raise
        self.rows += len(records)
        return sorted(record[0] for record in records)


def _resolve(batch: list[Pending], ids: list[int]) -> None:
    start = 0
    for texts, future, _ in batch:
        if not future.done():
            future.set_result(ids[start : start + len(texts)])
        start += len(texts)


def _fail(batch: list[Pending], make_error: Callable[[], BaseException]) -> None:
    for _, future, _ in batch:
        if not future.done():
            future.set_exception(make_error())  # one exception per request: each gets its own traceback
