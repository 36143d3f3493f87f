"""FastAPI, as its tutorial writes an API: pydantic models for the bodies, the database layer handed to
each path operation by `Depends`, a lifespan that starts and stops it, errors answered as JSON.

Validation errors and malformed JSON get FastAPI's 422; a body over 1 MiB gets 413 (`apps._body_limit`).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from apps._body_limit import BodyLimit
from apps._db import DatabaseError, Layer, layer_from_env

layer = layer_from_env()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await layer.start()
    yield
    await layer.stop()


app = FastAPI(lifespan=lifespan)
app.add_middleware(BodyLimit)  # 413 as JSON; FastAPI's own max_body_size answers in plain text

Text = Annotated[str, Field(min_length=1, max_length=1000)]


class Item(BaseModel):
    text: Text


class Items(BaseModel):
    texts: Annotated[list[Text], Field(min_length=1, max_length=100)]


class Created(BaseModel):
    id: int


class CreatedMany(BaseModel):
    ids: list[int]


async def get_db() -> Layer:
    return layer


Database = Annotated[Layer, Depends(get_db)]


@app.exception_handler(DatabaseError)
async def database_error(request: Request, exc: DatabaseError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)


@app.post("/items", status_code=201)
async def create_item(item: Item, db: Database) -> Created:
    return Created(id=await db.insert_one(item.text))


@app.post("/items/bulk", status_code=201)
async def create_items(items: Items, db: Database) -> CreatedMany:
    return CreatedMany(ids=await db.insert_many(items.texts))


@app.get("/health")
async def health(db: Database) -> dict[str, str]:
    if not db.ready:
        raise HTTPException(status_code=503, detail="database layer not ready")
    return {"status": "ok"}
