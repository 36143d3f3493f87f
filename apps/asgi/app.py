"""A bare ASGI callable: no framework, the floor under every other app.

It does by hand only what the contract needs: route four paths, refuse a body not declared as JSON (415),
read it up to 1 MiB (413 beyond), parse it with the standard json module (400 if malformed or nested too
deeply), check it (422), answer JSON.
"""

import json
from typing import Any

from apps._bare import MAX_BODY_SIZE, routes
from apps._bare import query_text as shared_query_text
from apps._db import DatabaseError, layer_from_env

GET_ENDPOINT = "GET /items"  # the same insert with ?text= and no body: what reading a body costs, per server
layer = layer_from_env()


ROUTES = routes(layer)
CREATE_ITEM = ROUTES["POST", "/items"]  # the GET form inserts the same way


async def app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http":
        status, body = await respond_to(scope, receive)
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def respond_to(scope: dict, receive: Any) -> tuple[int, dict]:
    handler = ROUTES.get((scope["method"], scope["path"]))
    if handler is None:
        if scope["path"] == "/health" and scope["method"] == "GET":
            return (200, {"status": "ok"}) if layer.ready else (503, {"detail": "database layer not ready"})
        if scope["path"] == "/items" and scope["method"] == "GET":
            try:
                return await CREATE_ITEM({"text": query_text(scope["query_string"])})
            except DatabaseError as exc:
                return exc.status_code, {"detail": str(exc)}
        return 404, {"detail": "Not Found"}
    if not declares_json(scope["headers"]):
        return 415, {"detail": "request body must be JSON, sent with Content-Type: application/json"}
    body = await read_body(receive)
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


def declares_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether Content-Type is `application/json`, parameters (`; charset=utf-8`) allowed, in any case."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def query_text(query: bytes) -> str | None:
    """``text`` from the query string, or None when it is missing, repeated or not UTF-8."""
    try:
        return shared_query_text(query.decode("utf-8", "strict"))
    except UnicodeDecodeError:
        return None


async def read_body(receive: Any) -> bytes | None:
    """The request body, or None once it grows past MAX_BODY_SIZE."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_SIZE:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def lifespan(receive: Any, send: Any) -> None:
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
