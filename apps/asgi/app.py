"""A bare ASGI callable: no framework, the floor under every other app.

It does by hand only what the contract needs: route three paths, read the body up to 1 MiB (413 beyond),
parse it with the standard json module (400 if malformed), check it (422), answer JSON.
"""

import json
from typing import Any

from apps._db import DatabaseError, layer_from_env

MAX_BODY_SIZE = 1024 * 1024
layer = layer_from_env()


def is_text(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 1000


async def create_item(data: Any) -> tuple[int, dict]:
    text = data.get("text") if isinstance(data, dict) else None
    if not is_text(text):
        return 422, {"detail": 'expected {"text": a string of 1-1000 characters}'}
    return 201, {"id": await layer.insert_one(text)}


async def create_items(data: Any) -> tuple[int, dict]:
    texts = data.get("texts") if isinstance(data, dict) else None
    if not (isinstance(texts, list) and 1 <= len(texts) <= 100 and all(map(is_text, texts))):
        return 422, {"detail": 'expected {"texts": 1-100 strings of 1-1000 characters}'}
    return 201, {"ids": await layer.insert_many(texts)}


ROUTES = {("POST", "/items"): create_item, ("POST", "/items/bulk"): create_items}


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
        return 404, {"detail": "Not Found"}
    body = await read_body(receive)
    if body is None:
        return 413, {"detail": f"request body larger than {MAX_BODY_SIZE} bytes"}
    try:
        data = json.loads(body)
    except ValueError:
        return 400, {"detail": "request body is not valid JSON"}
    try:
        return await handler(data)
    except DatabaseError as exc:
        return exc.status_code, {"detail": str(exc)}


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
