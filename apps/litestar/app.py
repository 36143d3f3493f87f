"""Litestar, as its docs write an API: msgspec Structs for the bodies (Litestar validates them), the
database layer injected with `Provide`, a lifespan that starts and stops it, errors answered as JSON.

Malformed or invalid bodies get Litestar's 400; a body over 1 MiB gets 413 (`request_max_body_size`); a
body not declared as JSON gets 415 from a `before_request` hook (Litestar would parse it anyway).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from litestar import Litestar, Request, Response, get, post
from litestar.di import Provide
from litestar.exceptions import HTTPException, ServiceUnavailableException
from litestar.params import Dependency
from msgspec import Meta, Struct

from apps._db import DatabaseError, Layer, layer_from_env

layer = layer_from_env()

Text = Annotated[str, Meta(min_length=1, max_length=1000)]


class Item(Struct):
    text: Text


class Items(Struct):
    texts: Annotated[list[Text], Meta(min_length=1, max_length=100)]


class Created(Struct):
    id: int


class CreatedMany(Struct):
    ids: list[int]


async def provide_db() -> Layer:
    return layer


# The layer is a Protocol, which Litestar's signature model cannot isinstance-check: skip that check.
Database = Annotated[Layer, Dependency(skip_validation=True)]


@post("/items")
async def create_item(data: Item, db: Database) -> Created:
    return Created(id=await db.insert_one(data.text))


@post("/items/bulk")
async def create_items(data: Items, db: Database) -> CreatedMany:
    return CreatedMany(ids=await db.insert_many(data.texts))


@post("/items/each")
async def create_items_each(data: Items, db: Database) -> CreatedMany:
    return CreatedMany(ids=await db.insert_each(data.texts))


@get("/health")
async def health(db: Database) -> dict[str, str]:
    if not db.ready:
        raise ServiceUnavailableException("database layer not ready")
    return {"status": "ok"}


def database_error(request: Request, exc: DatabaseError) -> Response:
    return Response({"status_code": exc.status_code, "detail": str(exc)}, status_code=exc.status_code)


def unreadable_body(request: Request, exc: UnicodeDecodeError | RecursionError) -> Response:
    # msgspec raises these for a body that is not UTF-8 or is nested too deeply; Litestar 2.25 answers a 500.
    detail = "not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "nested too deeply"
    return Response({"status_code": 400, "detail": f"request body is {detail}"}, status_code=400)


async def require_json(request: Request) -> None:
    if request.method == "POST" and request.content_type[0] != "application/json":
        raise HTTPException("request body must be JSON, sent with Content-Type: application/json", status_code=415)


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    await layer.start()
    yield
    await layer.stop()


app = Litestar(
    route_handlers=[create_item, create_items, create_items_each, health],
    dependencies={"db": Provide(provide_db)},
    before_request=require_json,
    exception_handlers={DatabaseError: database_error, UnicodeDecodeError: unreadable_body,
                        RecursionError: unreadable_body},
    lifespan=[lifespan],
    request_max_body_size=1024 * 1024,
)
