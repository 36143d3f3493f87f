"""FastAPI, as its tutorial writes an API: pydantic models for the bodies, the database layer handed to
each path operation by `Depends`, a lifespan that starts and stops it, errors answered as JSON.

Validation errors and malformed JSON get FastAPI's 422, without the input FastAPI's own handler echoes
(it cannot encode 1e999, NaN or a lone surrogate and answered 500); a body not declared as JSON gets 415
and a body over 1 MiB 413 (`apps._json_body`).

FastAPI has three ways to answer, which `BENCH_RESPONSE` picks for all three insert endpoints (same status codes
and JSON bodies whichever it is):

- `declared` (the default): the return type annotation, `-> Created`; FastAPI validates the returned model
  against it and serializes it;
- `model`: `response_model=Created` on the decorator and a plain dict returned, which FastAPI validates and
  serializes through the model;
- `response`: the handler builds the answer itself, `return JSONResponse({"id": ...}, status_code=201)`, which
  FastAPI sends as it is, with no validation or serialization of its own.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from apps._db import ConfigError, DatabaseError, Layer, layer_from_env
from apps._json_body import JsonBody

RESPONSES = ("declared", "model", "response")
RESPONSE = os.environ.get("BENCH_RESPONSE", RESPONSES[0])
if RESPONSE not in RESPONSES:
    raise ConfigError(f"BENCH_RESPONSE={RESPONSE!r} is not one of {', '.join(RESPONSES)}; set one of them or unset "
                      f"it (default {RESPONSES[0]}).")
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


if RESPONSE == "declared":  # the return type annotation is the response model

    @app.post("/items", status_code=201)
    async def create_item(item: Item, db: Database) -> Created:
        return Created(id=await db.insert_one(item.text))

    @app.post("/items/bulk", status_code=201)
    async def create_items(items: Items, db: Database) -> CreatedMany:
        return CreatedMany(ids=await db.insert_many(items.texts))

    @app.post("/items/each", status_code=201)
    async def create_items_each(items: Items, db: Database) -> CreatedMany:
        return CreatedMany(ids=await db.insert_each(items.texts))

elif RESPONSE == "model":  # the decorator's response_model validates and serializes the returned dict

    @app.post("/items", status_code=201, response_model=Created)
    async def create_item(item: Item, db: Database) -> dict[str, int]:
        return {"id": await db.insert_one(item.text)}

    @app.post("/items/bulk", status_code=201, response_model=CreatedMany)
    async def create_items(items: Items, db: Database) -> dict[str, list[int]]:
        return {"ids": await db.insert_many(items.texts)}

    @app.post("/items/each", status_code=201, response_model=CreatedMany)
    async def create_items_each(items: Items, db: Database) -> dict[str, list[int]]:
        return {"ids": await db.insert_each(items.texts)}

else:  # "response": a Response returned is sent as it is

    @app.post("/items", status_code=201)
    async def create_item(item: Item, db: Database) -> JSONResponse:
        return JSONResponse({"id": await db.insert_one(item.text)}, status_code=201)

    @app.post("/items/bulk", status_code=201)
    async def create_items(items: Items, db: Database) -> JSONResponse:
        return JSONResponse({"ids": await db.insert_many(items.texts)}, status_code=201)

    @app.post("/items/each", status_code=201)
    async def create_items_each(items: Items, db: Database) -> JSONResponse:
        return JSONResponse({"ids": await db.insert_each(items.texts)}, status_code=201)


@app.get("/health")
async def health(db: Database) -> dict[str, str]:
    if not db.ready:
        raise HTTPException(status_code=503, detail="database layer not ready")
    return {"status": "ok"}
