"""The original service, reproduced faithfully: FastAPI, `GET /test-insert`, an `AsyncSession` from a
`sessionmaker` over a 20-connection asyncpg engine, `session.begin()` then `commit()`, and the handler's
own timings (`time.time()`, `time.process_time()`) in the response.

One deviation: the text to insert comes from the optional query parameter `text` (default "test") so the
harness can verify each row. It brings its own engine and model (not apps._db) and runs with the `orm`
layer only; `GET /health` answers 200 once the database answers.
"""

import os
import time

from fastapi import FastAPI
from sqlalchemy import BigInteger, Column, String, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import declarative_base, sessionmaker
from sqlalchemy.pool import AsyncAdaptedQueuePool

DB_LAYERS = ("orm",)
ENDPOINT = "GET /test-insert"

if os.environ.get("BENCH_DB", "orm") != "orm":
    raise RuntimeError(f"BENCH_DB={os.environ['BENCH_DB']!r}: the seed app runs with BENCH_DB=orm only.")
if not os.environ.get("BENCH_DSN", "").startswith(("postgresql://", "postgres://")):
    raise RuntimeError("BENCH_DSN is missing or not a postgresql:// URL; set it to postgresql://user:pw@host:port/db.")
DATABASE_URL = "postgresql+asyncpg://" + os.environ["BENCH_DSN"].split("://", 1)[1]

engine = create_async_engine(DATABASE_URL, pool_size=20, poolclass=AsyncAdaptedQueuePool)
async_session = sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

Base = declarative_base()


class SimpleText(Base):
    __tablename__ = "simple_text"

    id = Column(BigInteger, primary_key=True)
    text = Column(String(1000), nullable=False)


app = FastAPI()


@app.get("/test-insert")
async def test_insert(text: str = "test"):
    t0 = time.time()
    c0 = time.process_time()
    row = SimpleText(text=text)
    async with async_session.begin() as sess:
        sess.add(row)
        await sess.commit()
    return {
        "id": row.id,
        "wall_ms": (time.time() - t0) * 1000,
        "cpu_ms": (time.process_time() - c0) * 1000,
    }


@app.get("/health")
async def health():
    async with async_session() as sess:
        await sess.execute(select(1))
    return {"status": "ok"}
