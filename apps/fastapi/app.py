"""FastAPI, as its tutorial writes an API: pydantic models for the bodies, the database layer handed to
each path operation by `Depends`, a lifespan that starts and stops it, errors answered as JSON.

Validation errors and malformed JSON get FastAPI's 422, without the input FastAPI's own handler echoes
(it cannot encode 1e999, NaN or a lone surrogate and answered 500); a body not declared as JSON gets 415
and a body over 1 MiB 413 (`apps._json_body`).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from apps._db import DatabaseError, Layer, layer_from_env
from apps._json_body import JsonBody

layer = layer_from_env()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await layer.start()
    yield
    await layer.stop()


app = FastAPI(lifespan=lifespan)
app.add_middleware(JsonBody)  # 415 and 413 as JSON; FastAPI's own max_body_size answers in plain text

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


@app.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"type": error["type"], "loc": error["loc"], "msg": error["msg"]} for error in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


@app.post("/items", status_code=201)
async def create_item(item: Item, db: Database) -> Created:
    return Created(id=await db.insert_one(item.text))


@app.post("/items/bulk", status_code=201)
async def create_items(items: Items, db: Database) -> CreatedMany:
    return CreatedMany(ids=await db.insert_many(items.texts))


@app.post("/items/each", status_code=201)
async def create_items_each(items: Items, db: Database) -> CreatedMany:
    return CreatedMany(ids=await db.insert_each(items.texts))


@app.get("/health")
async def health(db: Database) -> dict[str, str]:
    if not db.ready:
        raise HTTPException(status_code=503, detail="database layer not ready")
    return {"status": "ok"}
