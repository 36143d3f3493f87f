"""The original service: the FastAPI app published with the Stack Overflow question "FastAPI Insert
Performance: 1-2 ms Per Insert – Is This Normal?" (copy consulted: https://z.id.vn/?p=561251), the stack
whose 1–2 ms of CPU per insert insertbench sets out to explain.

What the published app does: an async `setup_database()` creates the engine (`create_async_engine(dsn,
pool_size=20, poolclass=AsyncAdaptedQueuePool)`) and returns `sessionmaker(engine, class_=AsyncSession)`
with default options, which the lifespan keeps in `app.state.db_session`. `GET /test-insert` (no parameters)
takes `start_time = time.time()` and `start_cpu_time = time.process_time()`, then inside `async with
app.state.db_session.begin() as sess:` executes `text("INSERT INTO simple_text (text) VALUES (:text)
RETURNING id")` with `sess.execute(query, params)`, reads `result.scalar_one()` and calls `await
sess.commit()`; it prints a timing line on every request and returns `id`, `duration` and `cpu_duration`.
The imports (bar `os`, `Annotated`, `Query` and `Request`, for the deviations), `setup_database`, the
lifespan and the handler's first two lines are as published; every copy found is cut off there, so the rest
of the handler (its later names, the print's wording, `duration` and `cpu_duration` as plain seconds) is
written from the question's description, the way its author's own lines go on.

Deviations, and nothing else:
- the DSN comes from `BENCH_DSN` (`postgresql://…`, turned into `postgresql+asyncpg://…`) instead of
  three literals; a missing or invalid one, or a `BENCH_DB` other than `orm`, stops it at import;
- the text comes from the query parameter `?text=` (default "Test"), read from the request, so the
  harness can verify each row; the handler therefore takes `request: Request`;
- `GET /health` is added: 200 once the database answers (the harness waits for it);
- the shutdown disposes of the engine: the published lifespan awaits `app.state.db_session.close()`,
  which a `sessionmaker` does not have, so every shutdown ended in an AttributeError;
- its stdout goes wherever the server's goes (the harness's server log);
- `GET /test-insert-many?n=N&text=T` is ours, not published: our extrapolation of the question's
  "endpoints with several inserts", written in the published handler's style (the same `text()` INSERT
  executed N times, 1-100, default 1, with the texts `T-0 … T-(N-1)`, inside one `begin()`, `scalar_one()`
  each, one `commit()`, one timing line printed), answering `ids`, `duration` and `cpu_duration`; an `n`
  out of range gets FastAPI's 422. The harness reads `EACH_ENDPOINT` to measure it.
"""

import os
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Query, Request
from sqlalchemy import AsyncAdaptedQueuePool, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import sessionmaker

DB_LAYERS = ("orm",)
PUBLISHED = True  # knobs edit a copy of this source (harness/measure/knobs.py), it reads none
ENDPOINT = "GET /test-insert"
EACH_ENDPOINT = "GET /test-insert-many"

if os.environ.get("BENCH_DB", "orm") != "orm":
    raise RuntimeError(f"BENCH_DB={os.environ['BENCH_DB']!r}: the seed app runs with BENCH_DB=orm only.")
if not os.environ.get("BENCH_DSN", "").startswith(("postgresql://", "postgres://")):
    raise RuntimeError(
        "BENCH_DSN is missing or not a postgresql:// URL; set it to postgresql://user:password@host:port/dbname."
    )
DATABASE_URL = "postgresql+asyncpg://" + os.environ["BENCH_DSN"].split("://", 1)[1]


async def setup_database():
    dsn = DATABASE_URL
    engine = create_async_engine(
        dsn,
        pool_size=20,
        poolclass=AsyncAdaptedQueuePool,
    )
    return sessionmaker(engine, class_=AsyncSession)


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Setup the database connection pool
    app.state.db_session = await setup_database()
    yield
    # Close the database connection pool
    await app.state.db_session.kw["bind"].dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/test-insert")
async def test_insert(request: Request):
    start_time = time.time()
    start_cpu_time = time.process_time()
    async with app.state.db_session.begin() as sess:
        query = text("INSERT INTO simple_text (text) VALUES (:text) RETURNING id")
        params = {"text": request.query_params.get("text", "Test")}
        result = await sess.execute(query, params)
        inserted_id = result.scalar_one()
        await sess.commit()
    end_time = time.time()
    end_cpu_time = time.process_time()
    duration = end_time - start_time
    cpu_duration = end_cpu_time - start_cpu_time
    print(f"Inserted id {inserted_id}: duration {duration * 1000:.3f} ms, CPU {cpu_duration * 1000:.3f} ms")
    return {"id": inserted_id, "duration": duration, "cpu_duration": cpu_duration}


@app.get("/test-insert-many")
async def test_insert_many(request: Request, n: Annotated[int, Query(ge=1, le=100)] = 1):
    start_time = time.time()
    start_cpu_time = time.process_time()
    prefix = request.query_params.get("text", "Test")
    inserted_ids = []
    async with app.state.db_session.begin() as sess:
        query = text("INSERT INTO simple_text (text) VALUES (:text) RETURNING id")
        for j in range(n):
            result = await sess.execute(query, {"text": f"{prefix}-{j}"})
            inserted_ids.append(result.scalar_one())
        await sess.commit()
    end_time = time.time()
    end_cpu_time = time.process_time()
    duration = end_time - start_time
    cpu_duration = end_cpu_time - start_cpu_time
    print(f"Inserted {n} ids from {inserted_ids[0]}: duration {duration * 1000:.3f} ms, "
          f"CPU {cpu_duration * 1000:.3f} ms")
    return {"ids": inserted_ids, "duration": duration, "cpu_duration": cpu_duration}


@app.get("/health")
async def health():
    async with app.state.db_session() as sess:
        await sess.execute(text("SELECT 1"))
    return {"status": "ok"}
