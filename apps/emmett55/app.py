"""emmett55, as its docs write an API: an `App` with `@app.route` handlers, every answer JSON through the
app-wide `ServicePipe("json")`, pipes around the routes that parse the body and turn a DatabaseError into its
answer, `response.status` set for anything but 200, `@app.on_error` handlers answering JSON. emmett55 has no
body models, so the body is checked by hand.

emmett55 (by granian's author) is RSGI-first: granian calls the App's `__rsgi__`; the same object is an ASGI
application too. It gives an app no awaitable start or stop: its one hook, the `after_loop` signal, is
synchronous, RSGI's `__rsgi_init__` sends it and its ASGI side, which answers no lifespan scope, never does. So
the App here adds the interfaces' own hooks, each starting and stopping the database layer (as the Django app
adds the lifespan Django lacks): RSGI's `__rsgi_init__`/`__rsgi_del__`, which granian calls with the worker's
loop before and after it serves, and an ASGI lifespan, in an `async def __call__` (emmett55's is a plain
function returning a coroutine, which uvicorn takes for an ASGI 2 application). Under RSGI each request still
goes straight to emmett55's `__rsgi__`; under ASGI through that one more coroutine.

A body not declared as JSON gets 415 and one over 1 MiB 413 (read up to the limit when it comes without
Content-Length), both before it is parsed: emmett55 reads any body whole, and its `request_max_content_length`
looks the length up as `content_length` (under RSGI a TypeError, so a 500; under ASGI a header no client
sends). A body that is not JSON gets 400 (emmett55's `body_params` would take it for no parameters), one that
is not {"text": str} / {"texts": [str, …]} within the limits 422. The parser is the standard json module,
emmett55's own when neither orjson nor rapidjson is installed.

`App(__name__)` makes empty `logs/` and `static/` folders beside this file at import, as every emmett55 app's
(git keeps no empty folder).
"""

import json
import re
from typing import Any

from emmett55 import App, Pipe, request, response
from emmett55.tools import ServicePipe

from apps._db import DatabaseError, layer_from_env

INTERFACES = ("rsgi", "asgi")
MAX_BODY_SIZE = 1024 * 1024
layer = layer_from_env()


class DatabaseApp(App):
    """emmett55's App, starting the database layer before it serves and stopping it after, under either interface."""

    def __rsgi_init__(self, loop) -> None:
        super().__rsgi_init__(loop)  # emmett55's after_loop signal
        loop.run_until_complete(layer.start())  # a failure stops the worker: GET /health never answers

    def __rsgi_del__(self, loop) -> None:
        loop.run_until_complete(layer.stop())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        else:
            await super().__call__(scope, receive, send)


async def lifespan(receive, send) -> None:
    await receive()  # lifespan.startup
    try:
        await layer.start()
    except Exception as exc:
        await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
        return
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    await layer.stop()
    await send({"type": "lifespan.shutdown.complete"})


app = DatabaseApp(__name__)
app.pipeline = [ServicePipe("json")]


class JSONBody(Pipe):
    """Give the route the request's JSON body as `data`, or answer 415, 413 or 400 instead."""

    async def pipe_request(self, next_pipe, **kwargs):
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            response.status = 415
            return {"detail": "request body must be JSON, sent with Content-Type: application/json"}
        body = await read_body()
        if body is None:
            response.status = 413
            return {"detail": f"request body larger than {MAX_BODY_SIZE} bytes"}
        try:
            data = json.loads(body.decode())
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            response.status = 400
            return {"detail": "request body is not valid JSON"}
        return await next_pipe(data=data, **kwargs)


async def read_body() -> bytes | None:
    """The request body, or None if it is larger than MAX_BODY_SIZE (by its Content-Length, or as it arrives)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_SIZE:
        return None
    chunks, size = [], 0
    async for chunk in request.body:
        size += len(chunk)
        if size > MAX_BODY_SIZE:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class DatabaseErrors(Pipe):
    """Answer a DatabaseError with its status code (422 for a row PostgreSQL rejects, 503 otherwise)."""

    async def pipe_request(self, next_pipe, **kwargs):
        try:
            return await next_pipe(**kwargs)
        except DatabaseError as exc:
            response.status = exc.status_code
            return {"detail": str(exc)}


WRITES = [DatabaseErrors(), JSONBody()]

# json accepts a lone surrogate ("\ud800"), which is no text PostgreSQL can store; pydantic and msgspec refuse it.
SURROGATE = re.compile("[\ud800-\udfff]")


def is_text(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 1000 and (value.isascii() or not SURROGATE.search(value))


def texts_of(data: Any) -> list[str] | None:
    texts = data.get("texts") if isinstance(data, dict) else None
    if isinstance(texts, list) and 1 <= len(texts) <= 100 and all(map(is_text, texts)):
        return texts
    return None


@app.route("/items", methods="post", pipeline=WRITES)
async def create_item(data: Any) -> dict:
    text = data.get("text") if isinstance(data, dict) else None
    if not is_text(text):
        response.status = 422
        return {"detail": 'expected {"text": a string of 1-1000 characters}'}
    response.status = 201
    return {"id": await layer.insert_one(text)}


@app.route("/items/bulk", methods="post", pipeline=WRITES)
async def create_items(data: Any) -> dict:
    if (texts := texts_of(data)) is None:
        response.status = 422
        return {"detail": 'expected {"texts": 1-100 strings of 1-1000 characters}'}
    response.status = 201
    return {"ids": await layer.insert_many(texts)}


@app.route("/items/each", methods="post", pipeline=WRITES)
async def create_items_each(data: Any) -> dict:
    if (texts := texts_of(data)) is None:
        response.status = 422
        return {"detail": 'expected {"texts": 1-100 strings of 1-1000 characters}'}
    response.status = 201
    return {"ids": await layer.insert_each(texts)}


@app.route("/health", methods="get")
async def health() -> dict:
    if not layer.ready:
        response.status = 503
        return {"detail": "database layer not ready"}
    return {"status": "ok"}


# emmett55's own answers (no route: 404, whatever the method; an exception: 500) are plain text.
@app.on_error(404)
async def not_found() -> str:
    response.content_type = "application/json"
    return json.dumps({"detail": "Not Found"})


@app.on_error(500)
async def internal_error() -> str:
    response.content_type = "application/json"
    return json.dumps({"detail": "Internal Server Error"})
