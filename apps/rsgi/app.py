"""A bare RSGI application: granian's own interface, no framework; the ``asgi`` app's twin, spoken in RSGI.

RSGI (granian's Rust Server Gateway Interface) hands the app a scope and a protocol object: the body is read by
iterating the protocol, the answer sent with one ``response_bytes`` call, instead of ASGI's receive/send message
dicts. The contract's checks are the bare ASGI app's (``apps._bare``); so the two apps' difference is the
interface's, and granian's ASGI against its RSGI shows what each costs.

``__rsgi_init__`` starts the database layer on the worker's loop before it serves (RSGI has no lifespan
messages), ``__rsgi_del__`` stops it.
"""

import asyncio
import json
from typing import Any

from apps._bare import MAX_BODY_SIZE, query_text, routes
from apps._db import DatabaseError, layer_from_env

INTERFACES = ("rsgi",)
DB_LAYERS = ("none", "asyncpg", "coalesced")
GET_ENDPOINT = "GET /items"  # the same insert with ?text= and no body: what reading a body costs
JSON = [("content-type", "application/json")]
layer = layer_from_env()


ROUTES = routes(layer)
CREATE_ITEM = ROUTES["POST", "/items"]  # the GET form inserts the same way


class App:
    """The RSGI application object: granian calls ``__rsgi__`` per request."""

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(layer.start())  # a failure stops the worker: GET /health never answers

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(layer.stop())

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            return
        status, body = await respond_to(scope, protocol)
        protocol.response_bytes(status, JSON, json.dumps(body).encode())


async def respond_to(scope: Any, protocol: Any) -> tuple[int, dict]:
    handler = ROUTES.get((scope.method, scope.path))
    if handler is None:
        if scope.path == "/health" and scope.method == "GET":
            return (200, {"status": "ok"}) if layer.ready else (503, {"detail": "database layer not ready"})
        if scope.path == "/items" and scope.method == "GET":
            try:
                return await CREATE_ITEM({"text": query_text(scope.query_string)})
            except DatabaseError as exc:
                return exc.status_code, {"detail": str(exc)}
        return 404, {"detail": "Not Found"}
    if not declares_json(scope.headers.get("content-type")):
        return 415, {"detail": "request body must be JSON, sent with Content-Type: application/json"}
    body = await read_body(protocol)
    if body is None:
        return 413, {"detail": f"request body larger than {MAX_BODY_SIZE} bytes"}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return 400, {"detail": "request body is not valid JSON"}
    try:
        return await handler(data)
    except DatabaseError as exc:
        return exc.status_code, {"detail": str(exc)}


def declares_json(content_type: str | None) -> bool:
    """Whether Content-Type is `application/json`, parameters (`; charset=utf-8`) allowed, in any case."""
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


async def read_body(protocol: Any) -> bytes | None:
    """The request body, or None once it grows past MAX_BODY_SIZE."""
    chunks, size = [], 0
    async for chunk in protocol:
        size += len(chunk)
        if size > MAX_BODY_SIZE:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


app = App()
