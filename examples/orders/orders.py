"""An example service for "Measure your own app": FastAPI + SQLAlchemy's ``AsyncSession`` over asyncpg.

``POST /orders`` takes ``{"reference": str, "customer": str, "amount_cents": int}`` and answers
``201 {"id": int}``. In one transaction it inserts the order and an ``order_events`` row recording that it
was created: two tables, two inserts per request, four statements (BEGIN, two INSERTs, COMMIT). A
reference already taken is refused with ``409``. The tables are in ``schema.sql``; the database URL comes
from ``DATABASE_URL`` (``postgresql+asyncpg://…``).

Measure it (docs/own-app.md, "Measure your own app")::

    nox -s bench -- --app orders:app --app-dir examples/orders --request "POST /orders" \\
        --body @examples/orders/order.json --env DATABASE_URL={dsn_asyncpg} \\
        --setup-sql @examples/orders/schema.sql
"""

import os
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

if not os.environ.get("DATABASE_URL", "").startswith("postgresql+asyncpg://"):
    raise RuntimeError("set DATABASE_URL to a postgresql+asyncpg://user:password@host:port/dbname URL")

engine = create_async_engine(os.environ["DATABASE_URL"], pool_size=20)
Session = async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    reference: Mapped[str] = mapped_column(String(100), unique=True)
    customer: Mapped[str] = mapped_column(String(100))
    amount_cents: Mapped[int]


class OrderEvent(Base):
    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    kind: Mapped[str] = mapped_column(String(20))


class OrderIn(BaseModel):
    reference: str = Field(min_length=1, max_length=100)
    customer: str = Field(min_length=1, max_length=100)
    amount_cents: int = Field(ge=0, le=2**31 - 1)


class OrderOut(BaseModel):
    id: int


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


async def get_session():
    async with Session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@app.post("/orders", status_code=201)
async def create_order(order: OrderIn, session: SessionDep) -> OrderOut:
    try:
        async with session.begin():
            row = Order(**order.model_dump())
            session.add(row)
            await session.flush()  # INSERT … RETURNING id: the event needs it
            session.add(OrderEvent(order_id=row.id, kind="created"))
    except IntegrityError:
        raise HTTPException(status_code=409, detail=f"order {order.reference!r} exists") from None
    return OrderOut(id=row.id)
