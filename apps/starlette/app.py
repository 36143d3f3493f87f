"""Starlette, as its docs write an app: plain async route functions returning JSONResponse, a lifespan
that starts and stops the database layer, exception handlers that answer JSON. Starlette has no body
models, so the body is checked by hand.

Malformed JSON gets 400, a body that is not {"text": str} / {"texts": [str, …]} within the limits 422;
a body not declared as JSON gets 415 and a body over 1 MiB 413 (`apps._json_body`).
"""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apps._db import DatabaseError, layer_from_env
from apps._json_body import JsonBody

layer = layer_from_env()


# json accepts a lone surrogate ("\ud800"), which is no text PostgreSQL can store; pydantic and msgspec refuse it.
SURROGATE = re.compile("[\ud800-\udfff]")


def is_text(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 1000 and (value.isascii() or not SURROGATE.search(value))


async def read_json(request: Request) -> dict:
    try:
        data = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise HTTPException(status_code=400, detail="request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(status_code=422, detail="request body must be a JSON object")
    return data


async def create_item(request: Request) -> JSONResponse:
    text = (await read_json(request)).get("text")
    if not is_text(text):
        raise HTTPException(status_code=422, detail='expected {"text": a string of 1-1000 characters}')
    return JSONResponse({"id": await layer.insert_one(text)}, status_code=201)


async def read_texts(request: Request) -> list[str]:
    texts = (await read_json(request)).get("texts")
    if not (isinstance(texts, list) and 1 <= len(texts) <= 100 and all(map(is_text, texts))):
        raise HTTPException(status_code=422, detail='expected {"texts": 1-100 strings of 1-1000 characters}')
    return texts


async def create_items(request: Request) -> JSONResponse:
    return JSONResponse({"ids": await layer.insert_many(await read_texts(request))}, status_code=201)


async def create_items_each(request: Request) -> JSONResponse:
    return JSONResponse({"ids": await layer.insert_each(await read_texts(request))}, status_code=201)


async def health(request: Request) -> JSONResponse:
    if not layer.ready:
        raise HTTPException(status_code=503, detail="database layer not ready")
    return JSONResponse({"status": "ok"})


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def database_error(request: Request, exc: DatabaseError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await layer.start()
    yield
    await layer.stop()


app = Starlette(
    routes=[
        Route("/items", create_item, methods=["POST"]),
        Route("/items/bulk", create_items, methods=["POST"]),
        Route("/items/each", create_items_each, methods=["POST"]),
        Route("/health", health),
    ],
    exception_handlers={HTTPException: http_error, DatabaseError: database_error},
    lifespan=lifespan,
    middleware=[Middleware(JsonBody)],  # 415 and 413 as JSON; Starlette's max_body_size answers in plain text
)
