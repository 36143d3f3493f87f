"""Sanic in its ASGI mode, as its docs write an app: `Sanic("...")`, route decorators, `request.json`, the
database layer started and stopped by server listeners (under an ASGI server Sanic runs them from the
lifespan), errors answered by Sanic's own JSON error pages. Sanic has no body models, so the body is checked
by hand.

Malformed JSON gets Sanic's 400, a body that is not {"text": str} / {"texts": [str, …]} within the limits 422.
Under an ASGI server Sanic reads any body whole, whatever its type (REQUEST_MAX_SIZE is its own server's), so
the hook its docs give for reading the body, a custom Request's `receive_body`, refuses a body not declared as
JSON (415) and one over 1 MiB (413), before and while reading it. The parser is the standard json module:
Sanic's default, ujson, accepts raw control characters inside strings, which JSON does not allow.
"""

import re
from json import loads
from typing import Any

from sanic import Request, Sanic
from sanic.errorpages import JSONRenderer
from sanic.exceptions import PayloadTooLarge, SanicException, ServiceUnavailable
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse, json

from apps._db import DatabaseError, layer_from_env

MAX_BODY_SIZE = 1024 * 1024
layer = layer_from_env()


class UnsupportedMediaType(SanicException):
    status_code = 415
    message = "request body must be JSON, sent with Content-Type: application/json"
    quiet = True  # a client's mistake: no traceback in the server's log


class UnprocessableEntity(SanicException):
    status_code = 422
    quiet = True


class JsonRequest(Request):
    """A request whose body is read only if it is declared as JSON, and only up to MAX_BODY_SIZE."""

    async def receive_body(self) -> None:
        if self.content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise UnsupportedMediaType
        length = self.headers.getone("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_SIZE:
            raise PayloadTooLarge(f"request body larger than {MAX_BODY_SIZE} bytes")
        chunks, size = [], 0
        async for chunk in self.stream:  # a body sent without a length is counted as it arrives
            size += len(chunk)
            if size > MAX_BODY_SIZE:
                raise PayloadTooLarge(f"request body larger than {MAX_BODY_SIZE} bytes")
            chunks.append(chunk)
        self.body = b"".join(chunks)


# error_handler: JSON error pages even for a client whose Accept names no JSON (Sanic's base renderer is text).
app = Sanic("insertbench", request_class=JsonRequest, loads=loads, error_handler=ErrorHandler(base=JSONRenderer))
app.config.FALLBACK_ERROR_FORMAT = "json"  # Sanic's own errors (400, 404, 405, 413, 500…) as JSON, not HTML
app.config.MOTD = False  # no banner at every start


@app.before_server_start
async def start_database(app: Sanic) -> None:
    await layer.start()


@app.after_server_stop
async def stop_database(app: Sanic) -> None:
    await layer.stop()


# json accepts a lone surrogate ("\ud800"), which is no text PostgreSQL can store; pydantic and msgspec refuse it.
SURROGATE = re.compile("[\ud800-\udfff]")


def is_text(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 1000 and (value.isascii() or not SURROGATE.search(value))


def read_object(request: Request) -> dict:
    data = request.json  # Sanic answers 400 for a body that is not JSON (or nested too deeply to parse)
    if not isinstance(data, dict):
        raise UnprocessableEntity("request body must be a JSON object")
    return data


def read_texts(request: Request) -> list[str]:
    texts = read_object(request).get("texts")
    if not (isinstance(texts, list) and 1 <= len(texts) <= 100 and all(map(is_text, texts))):
        raise UnprocessableEntity('expected {"texts": 1-100 strings of 1-1000 characters}')
    return texts


@app.post("/items")
async def create_item(request: Request) -> HTTPResponse:
    text = read_object(request).get("text")
    if not is_text(text):
        raise UnprocessableEntity('expected {"text": a string of 1-1000 characters}')
    return json({"id": await layer.insert_one(text)}, status=201)


@app.post("/items/bulk")
async def create_items(request: Request) -> HTTPResponse:
    return json({"ids": await layer.insert_many(read_texts(request))}, status=201)


@app.post("/items/each")
async def create_items_each(request: Request) -> HTTPResponse:
    return json({"ids": await layer.insert_each(read_texts(request))}, status=201)


@app.get("/health")
async def health(request: Request) -> HTTPResponse:
    if not layer.ready:
        raise ServiceUnavailable("database layer not ready")
    return json({"status": "ok"})


@app.exception(DatabaseError)
async def database_error(request: Request, exc: DatabaseError) -> HTTPResponse:
    return json({"detail": str(exc)}, status=exc.status_code)
