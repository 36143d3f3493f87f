"""BlackSheep, as its docs write an API: an `Application` with `@post`/`@get` route decorators, pydantic models
bound from the body with `FromJSON[...]`, the database layer injected from `app.services` by its type, a
`@app.lifespan` that starts and stops it, exception handlers and a fallback route that answer JSON.

Malformed or invalid bodies get BlackSheep's 400 (it validates with pydantic, which also refuses a lone
surrogate), answered in JSON by a 400 handler: BlackSheep's own answers plain text, or pydantic's errors with
the input, which JSON cannot always carry. BlackSheep would parse any Content-Type containing "json", reads
bodies of any size and lets JSON nested too deeply out as a 500, so: a middleware answers 415 for a body not
declared as JSON and 413 for one over 1 MiB (read up to the limit when it comes without Content-Length);
`json_settings` gets a `loads` that fails as BlackSheep expects (JSONDecodeError) for nesting too deep.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from json import JSONDecodeError
from json import loads as json_loads
from typing import Annotated, Any

from blacksheep import Application, Content, FromJSON, HTTPException, Request, Response, get, json, post
from blacksheep.settings.json import json_settings
from pydantic import BaseModel, Field, ValidationError

from apps._db import DatabaseError, Layer, layer_from_env

MAX_BODY_SIZE = 1024 * 1024
layer = layer_from_env()

Text = Annotated[str, Field(min_length=1, max_length=1000)]


class Item(BaseModel):
    text: Text


class Items(BaseModel):
    texts: Annotated[list[Text], Field(min_length=1, max_length=100)]


@post("/items")
async def create_item(data: FromJSON[Item], db: Layer) -> Response:
    return json({"id": await db.insert_one(data.value.text)}, status=201)


@post("/items/bulk")
async def create_items(data: FromJSON[Items], db: Layer) -> Response:
    return json({"ids": await db.insert_many(data.value.texts)}, status=201)


@post("/items/each")
async def create_items_each(data: FromJSON[Items], db: Layer) -> Response:
    return json({"ids": await db.insert_each(data.value.texts)}, status=201)


@get("/health")
async def health(db: Layer) -> Response:
    if not db.ready:
        return json({"detail": "database layer not ready"}, status=503)
    return json({"status": "ok"})


async def not_found() -> Response:
    return json({"detail": "Not Found"}, status=404)


def loads(text: str) -> Any:
    """json.loads, raising JSONDecodeError (which BlackSheep answers with 400) for nesting deeper than it goes."""
    try:
        return json_loads(text)
    except RecursionError as exc:  # BlackSheep turns the other failures (ValueError) into 400 itself
        raise JSONDecodeError("nested too deeply", text, 0) from exc


async def json_body(request: Request, handler: Callable[[Request], Awaitable[Response]]) -> Response:
    """A POST body must be declared `application/json` (parameters and any case allowed) and at most 1 MiB."""
    if request.method != "POST":
        return await handler(request)
    content_type = request.get_first_header(b"content-type") or b""
    if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
        return json({"detail": "request body must be JSON, sent with Content-Type: application/json"}, status=415)
    too_large = json({"detail": f"request body larger than {MAX_BODY_SIZE} bytes"}, status=413)
    length = request.get_first_header(b"content-length")
    if length is not None and length.isdigit():
        return too_large if int(length) > MAX_BODY_SIZE else await handler(request)
    body = bytearray()  # no Content-Length: read it here, stopping at the limit
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_SIZE:
            return too_large
    request.content = Content(content_type, bytes(body))
    return await handler(request)


async def http_error(app: Application, request: Request, exc: HTTPException) -> Response:
    if isinstance(exc.__context__, ValidationError):  # its errors without the input, which JSON cannot always carry
        detail = exc.__context__.errors(include_url=False, include_context=False, include_input=False)
        return json({"detail": detail}, status=exc.status)
    return json({"detail": str(exc) if exc.status < 500 else "Internal Server Error"}, status=exc.status)


async def database_error(app: Application, request: Request, exc: DatabaseError) -> Response:
    return json({"detail": str(exc)}, status=exc.status_code)


json_settings.use(loads=loads)

app = Application()
app.services.add_instance(layer, Layer)
app.router.fallback = not_found
app.middlewares.append(json_body)
app.exceptions_handlers.update({400: http_error, 500: http_error, DatabaseError: database_error})


@app.lifespan
async def database_lifespan() -> AsyncIterator[None]:
    await layer.start()
    yield
    await layer.stop()
