"""The database layers against a real PostgreSQL, no HTTP: above all the coalesced one, whose batching is
where bugs would hide (order, one statement for many inserts, a bad row failing only its own request,
bounded batches, no timer wait), how the layers report failures and configuration mistakes, and what each
knob (apps/_db `KNOBS`) changes in the statements PostgreSQL receives.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import multiprocessing
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from apps._db import KNOBS, LAYERS, DatabaseUnavailable, RowRejected, layer_from_env
from apps._db.coalesced import Coalesced
from harness.measure.process import free_port
from tests._rows import rows_like, texts_by_id
from tests.system.test_seed import statements_by_kind

UNNEST_STATEMENT = "%unnest($1::text[])%ordinality%"  # how pg_stat_statements shows the batch INSERT
STORING = [name for name in LAYERS if name != "none"]


def variant(name: str, **knobs: str) -> pytest.param:
    """A layer with knobs set (BENCH_AUTOCOMMIT="1", say), as a test parameter: (name, environment)."""
    env = {f"BENCH_{knob.upper()}": value for knob, value in knobs.items()}
    label = "-".join([name, *(f"{knob}={value}" if value != "1" else knob for knob, value in knobs.items())])
    return pytest.param(name, env, id=label)


PSYCOPG_UNDER_SA = [variant(name, sa_driver="psycopg") for name in ("core", "orm")]
# Every knob on each layer it changes (BENCH_SA_DRIVER=psycopg also with BENCH_AUTOCOMMIT=1)
KNOB_VARIANTS = [
    *(variant(name, autocommit="1") for name in ("core", "orm")),
    *PSYCOPG_UNDER_SA,
    *(variant(name, sa_driver="psycopg", autocommit="1") for name in ("core", "orm")),
    *(variant(name, pre_ping="1") for name in ("core", "orm")),
    *(variant(name, transaction="1") for name in ("asyncpg", "psycopg")),
    *(variant(name, pool_reset="1") for name in ("asyncpg", "coalesced")),
]


def marker() -> str:
    return f"layers-{uuid.uuid4().hex}"


@contextlib.asynccontextmanager
async def coalesced(database, **options: int) -> AsyncIterator[Coalesced]:
    layer = Coalesced(database.dsn, 20, **options)
    await layer.start()
    try:
        yield layer
    finally:
        await layer.stop()


def test_ids_come_back_in_order_with_their_texts(database) -> None:
    prefix = marker()
    singles = [f"{prefix}-single-{i:04}" for i in range(300)]
    bulk = [f"{prefix}-bulk-{i:04}" for i in range(100)]

    async def scenario() -> tuple[list[int], list[int]]:
        async with coalesced(database) as layer:
            single_ids = await asyncio.gather(*(layer.insert_one(text) for text in singles))
            return list(single_ids), await layer.insert_many(bulk)

    single_ids, bulk_ids = asyncio.run(scenario())
    stored = texts_by_id(database, single_ids + bulk_ids)
    assert [stored[i] for i in single_ids] == singles
    assert [stored[i] for i in bulk_ids] == bulk
    assert single_ids == sorted(single_ids) and bulk_ids == sorted(bulk_ids)  # one statement each, in order


def test_many_concurrent_inserts_are_one_statement(database) -> None:
    prefix = marker()

    async def scenario() -> tuple[int, int, list[int]]:
        async with coalesced(database) as layer:
            ids = await asyncio.gather(*(layer.insert_one(f"{prefix}-{i}") for i in range(200)))
            return layer.statements, layer.rows, list(ids)

    statements, rows, ids = asyncio.run(scenario())
    assert (statements, rows) == (1, 200)
    assert len(set(ids)) == 200 and rows_like(database, prefix) == 200


def test_a_rejected_row_fails_only_its_own_request(database) -> None:
    prefix = marker()
    good = [f"{prefix}-good-{i}" for i in range(10)]
    bad_bulk = [f"{prefix}-bad-bulk-a", f"{prefix}-bad-bulk-\u0000", f"{prefix}-bad-bulk-c"]
    good_bulk = [f"{prefix}-good-bulk-{i}" for i in range(3)]

    async def scenario() -> list:
        async with coalesced(database) as layer:
            calls = [layer.insert_one(text) for text in good[:5]]
            calls += [layer.insert_one(f"{prefix}-bad-\u0000"), layer.insert_many(bad_bulk)]
            calls += [layer.insert_one(text) for text in good[5:]] + [layer.insert_many(good_bulk)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(scenario())
    bad_single, bad_many = results[5], results[6]
    assert isinstance(bad_single, RowRejected) and bad_single.status_code == 422
    assert isinstance(bad_many, RowRejected)
    good_ids = results[:5] + results[7:-1]
    assert all(isinstance(i, int) for i in good_ids), results
    stored = texts_by_id(database, good_ids + results[-1])
    assert [stored[i] for i in good_ids] == good and [stored[i] for i in results[-1]] == good_bulk
    assert rows_like(database, f"{prefix}-bad") == 0  # nothing of the failed bulk either


def test_batches_are_bounded_and_never_split_a_request(database) -> None:
    prefix = marker()

    async def scenario() -> tuple[int, int, int]:
        async with coalesced(database, max_batch_rows=100) as layer:
            await asyncio.gather(*(layer.insert_one(f"{prefix}-{i}") for i in range(250)))
            singles = layer.statements
            # 60 + 60 > 100: every bulk request needs a statement of its own, whole
            await asyncio.gather(*(layer.insert_many([f"{prefix}-bulk-{i}"] * 60) for i in range(5)))
            with pytest.raises(ValueError):
                await layer.insert_many(["too many"] * 101)
            return singles, layer.statements - singles, layer.rows

    singles, bulks, rows = asyncio.run(scenario())
    assert singles == math.ceil(250 / 100) and bulks == 5 and rows == 550
    assert rows_like(database, prefix) == 550


def test_a_lone_insert_is_sent_at_the_next_loop_turn(database) -> None:
    async def scenario() -> None:
        async with coalesced(database) as layer:
            insert = asyncio.ensure_future(layer.insert_one(marker()))
            await asyncio.sleep(0)  # the request queues its row and schedules a flush with call_soon
            await asyncio.sleep(0)  # the flush ran: the statement is on its way, no timer was waited for
            assert layer.in_flight == 1
            await insert
            assert (layer.statements, layer.rows) == (1, 1)

    asyncio.run(scenario())


def test_average_rows_per_statement_under_64_concurrent_inserters(database, record_property) -> None:
    prefix = marker()
    per_inserter = 50

    async def inserter(layer: Coalesced, n: int) -> None:
        for i in range(per_inserter):
            await layer.insert_one(f"{prefix}-{n}-{i}")

    def pg_stat_calls() -> int | None:
        if not database.pg_stat_statements:
            return None
        sql = "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query ILIKE $1"
        return database.fetch(sql, UNNEST_STATEMENT)[0][0]

    async def scenario() -> tuple[int, int]:
        async with coalesced(database) as layer:
            await asyncio.gather(*(inserter(layer, n) for n in range(64)))
            return layer.statements, layer.rows

    calls_before = pg_stat_calls()
    statements, rows = asyncio.run(scenario())
    calls_after = pg_stat_calls()
    average = rows / statements
    record_property("coalesced_rows_per_statement", round(average, 1))
    print(f"\ncoalesced, 64 concurrent inserters: {rows} rows in {statements} statements, {average:.1f} rows each")
    assert rows == 64 * per_inserter == rows_like(database, prefix)
    if calls_before is not None:
        assert calls_after - calls_before == statements  # the counter agrees with PostgreSQL
    assert average >= 8, "concurrent inserts should share statements"


def test_each_rows_share_statements_with_whatever_is_in_flight(database) -> None:
    prefix = marker()
    requests = [[f"{prefix}-{n}-{j}" for j in range(10)] for n in range(5)]

    async def scenario() -> tuple[list, int]:
        async with coalesced(database) as layer:
            return list(await asyncio.gather(*map(layer.insert_each, requests))), layer.statements

    ids, statements = asyncio.run(scenario())
    assert statements == 1  # five "each" requests of 10 rows, concurrent: one INSERT
    stored = texts_by_id(database, [i for request in ids for i in request])
    assert [[stored[i] for i in request] for request in ids] == requests


def test_a_stalled_database_gets_503_instead_of_a_growing_queue(database) -> None:
    prefix = marker()

    async def scenario(layer: Coalesced, admin: asyncpg.Connection) -> tuple[list, list]:
        stalled = admin.transaction()
        await stalled.start()
        await admin.execute("LOCK TABLE simple_text IN ACCESS EXCLUSIVE MODE")  # every INSERT waits for it
        sent = [asyncio.ensure_future(layer.insert_many([f"{prefix}-sent-{n}"] * 10)) for n in range(2)]
        while layer.in_flight < 2:
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(layer.insert_many([f"{prefix}-queued-{n}"] * 10)) for n in range(3)]
        await asyncio.sleep(0.1)
        with pytest.raises(DatabaseUnavailable):  # the queue is full: refused at once
            await layer.insert_one(f"{prefix}-overflow")
        timed_out = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 5)
        room = [asyncio.ensure_future(layer.insert_many([f"{prefix}-room"] * 10)) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert not any(request.done() for request in room)  # queued again: the expired rows left the queue
        await stalled.rollback()  # the lock goes: what was sent is written, then the queue
        return timed_out, await asyncio.wait_for(asyncio.gather(*sent, *room), 10)

    async def stalled() -> tuple[list, list]:
        async with coalesced(database, max_in_flight=2, max_batch_rows=10, max_queued_rows=30) as layer:
            layer.queue_timeout = 0.5
            admin = await asyncpg.connect(database.dsn)
            try:
                return await scenario(layer, admin)
            finally:  # ends the stall whatever happened, or the layer's stop() would wait for it forever
                await admin.close()

    timed_out, written = asyncio.run(stalled())
    assert [type(error) for error in timed_out] == [DatabaseUnavailable] * 3 and timed_out[0].status_code == 503
    assert [len(ids) for ids in written] == [10] * 5
    assert rows_like(database, f"{prefix}-sent") == 20 and rows_like(database, f"{prefix}-room") == 30
    assert rows_like(database, f"{prefix}-queued") == 0 and rows_like(database, f"{prefix}-overflow") == 0


# --- every layer -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "knobs"), [*(variant(name) for name in STORING), *PSYCOPG_UNDER_SA])
def test_an_unreachable_database_is_503_at_start(name: str, knobs: dict[str, str]) -> None:
    dsn = f"postgresql://nobody:x@127.0.0.1:{free_port()}/none"
    layer = layer_from_env({"BENCH_DB": name, "BENCH_DSN": dsn, **knobs})
    with pytest.raises(DatabaseUnavailable) as raised:
        asyncio.run(layer.start())
    assert raised.value.status_code == 503


@pytest.mark.parametrize(("name", "knobs"), [*(variant(name) for name in STORING), *PSYCOPG_UNDER_SA])
def test_a_connection_lost_mid_insert_is_503_and_the_layer_recovers(database, name: str,
                                                                      knobs: dict[str, str]) -> None:
    # Our lock holds the insert inside PostgreSQL; then its backend is terminated, and only that one.
    blocked_by_us = "WHERE pg_blocking_pids(pid) @> ARRAY[pg_backend_pid()]"
    layer = layer_from_env({"BENCH_DB": name, "BENCH_DSN": database.dsn, "BENCH_POOL_SIZE": "2", **knobs})

    async def scenario() -> None:
        await layer.start()
        admin = await asyncpg.connect(database.dsn)  # database.fetch would start a second event loop
        try:
            async with admin.transaction():
                await admin.execute("LOCK TABLE simple_text IN ACCESS EXCLUSIVE MODE")
                insert = asyncio.ensure_future(layer.insert_one(marker()))
                while not await admin.fetchval(f"SELECT count(*) FROM pg_stat_activity {blocked_by_us}"):
                    await asyncio.sleep(0.01)
                await admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity {blocked_by_us}")
                with pytest.raises(DatabaseUnavailable) as raised:
                    await insert
                assert raised.value.status_code == 503
            assert isinstance(await layer.insert_one(marker()), int)
        finally:
            await admin.close()
            await layer.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(("name", "knobs"), [*(variant(name) for name in LAYERS), *KNOB_VARIANTS])
def test_layers_insert_and_reject_alike(database, name: str, knobs: dict[str, str]) -> None:
    prefix = marker()

    async def scenario() -> list[int]:
        layer = layer_from_env({"BENCH_DB": name, "BENCH_DSN": database.dsn, "BENCH_POOL_SIZE": "4", **knobs})
        await layer.start()
        try:
            one = await layer.insert_one(f"{prefix}-one")
            many = await layer.insert_many([f"{prefix}-{i}" for i in range(5)])
            each = await layer.insert_each([f"{prefix}-each-{i}" for i in range(3)])
            if name != "none":
                for insert in (layer.insert_one, layer.insert_many, layer.insert_each):
                    with pytest.raises(RowRejected):  # NUL, and a lone surrogate, are no text PostgreSQL stores
                        await insert(f"{prefix}-\u0000" if insert == layer.insert_one else [f"{prefix}-x", "\u0000"])
                    with pytest.raises(RowRejected):
                        await insert(f"{prefix}-\ud800" if insert == layer.insert_one else [f"{prefix}-y", "\ud800"])
            return [one, *many, *each]
        finally:
            await layer.stop()

    ids = asyncio.run(scenario())
    assert len(set(ids)) == 9
    expected = [f"{prefix}-one"] + [f"{prefix}-{i}" for i in range(5)] + [f"{prefix}-each-{i}" for i in range(3)]
    if name == "none":
        assert rows_like(database, prefix) == 0
    else:
        stored = texts_by_id(database, ids)
        assert [stored[i] for i in ids] == expected
        # an "each" request is one transaction, so its good row went with the bad one; except in the coalesced
        # layer, where every row of it is a request of its own
        assert rows_like(database, prefix) == 9 + (2 if name == "coalesced" else 0)


async def statements(database) -> collections.Counter:
    """Statements by kind so far (database.fetch runs an event loop of its own: not in ours)."""
    return await asyncio.to_thread(statements_by_kind, database)


@pytest.mark.parametrize(("name", "knobs"), [
    *(variant(name) for name in ("asyncpg", "core", "orm", "psycopg")),
    # the knobs for single-statement writes leave an "each" request's transaction alone
    *(variant(name, autocommit="1") for name in ("core", "orm")),
    *(variant(name, transaction="1") for name in ("asyncpg", "psycopg")),
    *PSYCOPG_UNDER_SA,
])
def test_each_is_one_insert_per_row_in_one_transaction(database, name: str, knobs: dict[str, str]) -> None:
    if not database.pg_stat_statements:
        pytest.skip("pg_stat_statements is not available in this PostgreSQL")
    prefix = marker()

    async def scenario() -> tuple:
        layer = layer_from_env({"BENCH_DB": name, "BENCH_DSN": database.dsn, "BENCH_POOL_SIZE": "1", **knobs})
        await layer.start()
        try:
            await layer.insert_each([f"{prefix}-warm-up"])  # whatever a connection's first use costs is not ours
            before = await statements(database)
            ids = await layer.insert_each([f"{prefix}-{j}" for j in range(7)])
            between = await statements(database)
            with pytest.raises(RowRejected):
                await layer.insert_each([f"{prefix}-rolled-back-{j}" for j in range(3)] + ["\u0000"])
            return ids, +(between - before), +(await statements(database) - between)
        finally:
            await layer.stop()

    ids, written, rolled_back = asyncio.run(scenario())
    assert written == {"BEGIN": 1, "INSERT": 7, "COMMIT": 1}
    assert rolled_back == {"BEGIN": 1, "INSERT": 3, "ROLLBACK": 1}  # a failed statement is not counted
    stored = texts_by_id(database, ids)
    assert [stored[i] for i in ids] == [f"{prefix}-{j}" for j in range(7)] and ids == sorted(ids)
    assert rows_like(database, f"{prefix}-rolled-back") == 0


# What one single-statement write (insert_one, insert_many) sends, per layer and knob, as pg_stat_statements
# counts it (an empty query, such as SQLAlchemy's ping `;`, is not counted: it is a round trip all the same).
TRANSACTION = {"BEGIN": 1, "INSERT": 1, "COMMIT": 1}
ALONE = {"INSERT": 1}
RESET = {"SELECT": 1, "CLOSE": 1, "UNLISTEN": 1, "RESET": 1}  # asyncpg's reset query, sent on every release
PING = {"BEGIN": 1, "ROLLBACK": 1}  # SQLAlchemy's ping over asyncpg, outside a transaction: BEGIN, `;`, ROLLBACK


def plus(*counts: dict[str, int]) -> dict[str, int]:
    return dict(sum(map(collections.Counter, counts), collections.Counter()))


STATEMENTS_PER_WRITE = [
    (variant("asyncpg"), ALONE),
    (variant("asyncpg", transaction="1"), TRANSACTION),
    (variant("asyncpg", pool_reset="1"), plus(ALONE, RESET)),
    (variant("coalesced"), ALONE),
    (variant("coalesced", pool_reset="1"), plus(ALONE, RESET)),  # a lone write is a batch: one release
    (variant("psycopg"), ALONE),
    (variant("psycopg", transaction="1"), TRANSACTION),
    *((variant(name), TRANSACTION) for name in ("core", "orm")),
    *((variant(name, autocommit="1"), ALONE) for name in ("core", "orm")),
    *((variant(name, sa_driver="psycopg"), TRANSACTION) for name in ("core", "orm")),
    *((variant(name, sa_driver="psycopg", autocommit="1"), ALONE) for name in ("core", "orm")),
    *((variant(name, pre_ping="1"), plus(TRANSACTION, PING)) for name in ("core", "orm")),
    # the ping comes at checkout, before the connection is switched to autocommit: BEGIN, INSERT, ROLLBACK
    (variant("core", pre_ping="1", autocommit="1"), plus(ALONE, PING)),
    (variant("core", pre_ping="1", sa_driver="psycopg"), TRANSACTION),  # its ping is `;` in autocommit
]


@pytest.mark.parametrize("method", ["insert_one", "insert_many"])
@pytest.mark.parametrize(("name", "knobs", "expected"), [
    pytest.param(*param.values, expected, id=param.id) for param, expected in STATEMENTS_PER_WRITE
])
def test_the_statements_a_single_statement_write_sends(database, name: str, knobs: dict[str, str],
                                                       expected: dict[str, int], method: str) -> None:
    if not database.pg_stat_statements:
        pytest.skip("pg_stat_statements is not available in this PostgreSQL")
    prefix, calls = marker(), 5

    def argument(i: int) -> str | list[str]:
        return f"{prefix}-{i}" if method == "insert_one" else [f"{prefix}-{i}-{j}" for j in range(3)]

    async def written(layer, i: int) -> None:
        await getattr(layer, method)(argument(i))
        while getattr(layer, "in_flight", 0):  # the coalesced layer answers before its connection is released
            await asyncio.sleep(0.001)

    async def scenario() -> collections.Counter:
        layer = layer_from_env({"BENCH_DB": name, "BENCH_DSN": database.dsn, "BENCH_POOL_SIZE": "1", **knobs})
        await layer.start()
        try:
            await written(layer, -1)  # whatever a connection's first use costs is not the writes'
            before = await statements(database)
            for i in range(calls):
                await written(layer, i)
            return +(await statements(database) - before)
        finally:
            await layer.stop()

    sent = asyncio.run(scenario())
    print(f"\n{name} {knobs or ''} {method}: {dict(sent)} in {calls} calls")
    assert sent == {kind: count * calls for kind, count in expected.items()}
    assert rows_like(database, prefix) == (1 if method == "insert_one" else 3) * (1 + calls)


@pytest.mark.parametrize("driver", KNOBS["BENCH_SA_DRIVER"][0])
@pytest.mark.parametrize("pre_ping", ["0", "1"])
def test_pre_ping_replaces_a_connection_dropped_while_idle(database, pre_ping: str, driver: str) -> None:
    prefix = marker()
    knobs = {"BENCH_PRE_PING": pre_ping, "BENCH_SA_DRIVER": driver}
    layer = layer_from_env({"BENCH_DB": "core", "BENCH_DSN": database.dsn, "BENCH_POOL_SIZE": "1", **knobs})
    in_this_database = "FROM pg_stat_activity WHERE datname = current_database()"

    async def scenario() -> None:
        admin = await asyncpg.connect(database.dsn)
        try:
            others = await admin.fetchval(f"SELECT array_agg(pid) {in_this_database}")
            await layer.start()
            await layer.insert_one(f"{prefix}-before")
            ours = f"{in_this_database} AND pid <> ALL($1::int[])"  # the backends the layer opened: its pool's one
            assert await admin.fetchval(f"SELECT count(pg_terminate_backend(pid)) {ours}", others) == 1
            while await admin.fetchval(f"SELECT count(*) {ours}", others):
                await asyncio.sleep(0.01)
            if pre_ping == "1":  # the ping finds the connection gone: the pool opens another, the insert goes through
                assert isinstance(await layer.insert_one(f"{prefix}-after"), int)
            else:  # the insert finds it gone; the next one gets a new connection
                with pytest.raises(DatabaseUnavailable):
                    await layer.insert_one(f"{prefix}-lost")
                assert isinstance(await layer.insert_one(f"{prefix}-after"), int)
        finally:
            await admin.close()
            await layer.stop()

    asyncio.run(scenario())
    assert rows_like(database, f"{prefix}-after") == 1 and rows_like(database, f"{prefix}-lost") == 0


def _first_ids() -> list[int]:
    """The first three ids a freshly started `none` layer hands out in this process."""
    from apps._db.none import NoDatabase

    async def ids() -> list[int]:
        layer = NoDatabase()
        await layer.start()
        return [await layer.insert_one("a"), *(await layer.insert_many(["b", "c"]))]

    return asyncio.run(ids())


def test_the_none_layer_counts_from_a_base_of_its_own_in_each_worker() -> None:
    mine = _first_ids()
    assert mine == [(os.getpid() << 32) + n for n in (1, 2, 3)]
    with multiprocessing.get_context("fork").Pool(1) as pool:  # a forked worker, as `uvicorn --workers 2` makes
        theirs = pool.apply(_first_ids)
    assert len(theirs) == 3 and not set(mine) & set(theirs)
