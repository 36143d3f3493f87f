"""A stalled database seen through HTTP: over the coalesced layer, every app answers 503 in JSON to a request
that waited too long for a connection, instead of holding it (and its memory) for as long as the stall lasts;
the request already inside PostgreSQL is written once the stall ends.

The stall is real: the table is locked from another connection, so the layer's only connection waits inside
PostgreSQL. Real servers, real HTTP, no mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import asyncpg
import httpx
import pytest

from apps._db import DEFAULT_ACQUIRE_TIMEOUT
from harness.axes import SERVERS
from harness.measure.apps import discover
from harness.measure.servers import serve
from tests._rows import rows_like

POST_APPS = [app for app in discover().values() if app.bulk and "coalesced" in app.db_layers]


def first_server(app) -> str:
    """uvicorn for an ASGI app; the first server that speaks the app's interface for any other."""
    return next(server for server in SERVERS if app.serves_under(server))
QUEUE_TIMEOUT = DEFAULT_ACQUIRE_TIMEOUT  # the coalesced queue's, as the servers run it
BLOCKED_BY_US = "SELECT count(*) FROM pg_stat_activity WHERE pg_blocking_pids(pid) @> ARRAY[pg_backend_pid()]"


async def stall(dsn: str, urls: dict[str, str], prefix: str) -> tuple[dict, dict, float]:
    """With the table locked: one insert per app goes into PostgreSQL and waits, a second one queues behind it."""
    admin = await asyncpg.connect(dsn)
    try:
        async with httpx.AsyncClient(timeout=4 * QUEUE_TIMEOUT) as http:
            async with admin.transaction():
                await admin.execute("LOCK TABLE simple_text IN ACCESS EXCLUSIVE MODE")
                sent = {name: asyncio.ensure_future(http.post(url + "/items", json={"text": f"{prefix}-{name}-sent"}))
                        for name, url in urls.items()}
                while await admin.fetchval(BLOCKED_BY_US) < len(urls):
                    await asyncio.sleep(0.05)
                started = time.monotonic()
                queued = await asyncio.gather(*(http.post(url + "/items", json={"text": f"{prefix}-{name}-queued"})
                                                for name, url in urls.items()))
                waited = time.monotonic() - started
            sent_answers = await asyncio.gather(*sent.values())
            return dict(zip(urls, sent_answers, strict=True)), dict(zip(urls, queued, strict=True)), waited
    finally:
        await admin.close()


@pytest.mark.slow
def test_a_request_queued_behind_a_stalled_database_gets_503_in_json(database) -> None:
    prefix = f"stalled-{uuid.uuid4().hex}"
    with contextlib.ExitStack() as servers:
        started = [servers.enter_context(serve(app, first_server(app), db="coalesced", dsn=database.dsn,
                                               pool_size=1)) for app in POST_APPS]
        urls = {app.name: server.url for app, server in zip(POST_APPS, started, strict=True)}
        sent, queued, waited = asyncio.run(stall(database.dsn, urls, prefix))
    for name, response in queued.items():
        assert response.status_code == 503, (name, response.text)
        assert response.headers["content-type"].startswith("application/json") and response.json(), name
        assert rows_like(database, f"{prefix}-{name}-queued") == 0
    assert QUEUE_TIMEOUT - 0.5 <= waited <= 3 * QUEUE_TIMEOUT
    for name, response in sent.items():
        assert response.status_code == 201, (name, response.text)
        assert rows_like(database, f"{prefix}-{name}-sent") == 1
