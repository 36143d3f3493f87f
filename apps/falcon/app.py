"""Falcon, as its docs write an ASGI app: a `falcon.asgi.App` with resource classes whose `on_post` responders
read `await req.get_media()` and set `resp.media`, a middleware component whose `process_startup` and
`process_shutdown` start and stop the database layer, an error handler that turns a DatabaseError into
Falcon's JSON error. Falcon has no body models, so the body is checked by hand.

Falcon answers its errors in JSON. A body not declared as JSON gets 415 from a `RequireJSON` middleware (as
Falcon's README writes one: Falcon would parse a body without Content-Type, and forms, too); the JSON media
handler reads at most 1 MiB (413 beyond, with or without Content-Length) and answers 400 for a body that is
not JSON, nested too deeply included (Falcon's own handler lets that RecursionError out as a 500); a body that
is not {"text": str} / {"texts": [str, …]} within the limits gets 422.
"""

import json
import re
from typing import Any

import falcon
import falcon.asgi
import falcon.media

from apps._db import DatabaseError, Layer, layer_from_env

MAX_BODY_SIZE = 1024 * 1024
layer = layer_from_env()


# json accepts a lone surrogate ("\ud800"), which is no text PostgreSQL can store; pydantic and msgspec refuse it.
SURROGATE = re.compile("[\ud800-\udfff]")


def is_text(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 1000 and (value.isascii() or not SURROGATE.search(value))


class LimitedJSONHandler(falcon.media.JSONHandler):
    """Falcon's JSON media handler, reading no more than `max_body_size` bytes of the request."""

    def __init__(self, max_body_size: int = MAX_BODY_SIZE) -> None:
        super().__init__()
        self.max_body_size = max_body_size

    async def deserialize_async(self, stream: Any, content_type: str | None, content_length: int | None) -> Any:
        too_large = falcon.HTTPContentTooLarge(description=f"request body larger than {self.max_body_size} bytes")
        if content_length is not None and content_length > self.max_body_size:
            raise too_large
        data = await stream.read(self.max_body_size + 1)  # a body without Content-Length stops here too
        if len(data) > self.max_body_size:
            raise too_large
        if not data:
            raise falcon.MediaNotFoundError("JSON")
        try:
            return json.loads(data.decode())
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
            raise falcon.MediaMalformedError("JSON") from exc


class RequireJSON:
    """Refuse a POST body whose Content-Type is not `application/json` (parameters and any case allowed)."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if req.method != "POST":
            return
        media_type = falcon.parse_header(req.content_type or "")[0].lower()
        if media_type != falcon.MEDIA_JSON:
            raise falcon.HTTPUnsupportedMediaType(
                description="request body must be JSON, sent with Content-Type: application/json")
        # Falcon looks its media handlers up by the header as sent, case and all; media types have no case.
        req.content_type = media_type


class DatabaseLifespan:
    """Start the database layer with the app and stop it with the app."""

    def __init__(self, db: Layer) -> None:
        self.db = db

    async def process_startup(self, scope: dict, event: dict) -> None:
        await self.db.start()

    async def process_shutdown(self, scope: dict, event: dict) -> None:
        await self.db.stop()


async def read_object(req: falcon.asgi.Request) -> dict:
    data = await req.get_media()
    if not isinstance(data, dict):
        raise falcon.HTTPUnprocessableEntity(description="request body must be a JSON object")
    return data


async def read_texts(req: falcon.asgi.Request) -> list[str]:
    texts = (await read_object(req)).get("texts")
    if not (isinstance(texts, list) and 1 <= len(texts) <= 100 and all(map(is_text, texts))):
        raise falcon.HTTPUnprocessableEntity(description='expected {"texts": 1-100 strings of 1-1000 characters}')
    return texts


class ItemsResource:
    def __init__(self, db: Layer) -> None:
        self.db = db

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        text = (await read_object(req)).get("text")
        if not is_text(text):
            raise falcon.HTTPUnprocessableEntity(description='expected {"text": a string of 1-1000 characters}')
        resp.media = {"id": await self.db.insert_one(text)}
        resp.status = falcon.HTTP_201

    async def on_post_bulk(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"ids": await self.db.insert_many(await read_texts(req))}
        resp.status = falcon.HTTP_201

    async def on_post_each(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"ids": await self.db.insert_each(await read_texts(req))}
        resp.status = falcon.HTTP_201


class HealthResource:
    def __init__(self, db: Layer) -> None:
        self.db = db

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if not self.db.ready:
            raise falcon.HTTPServiceUnavailable(description="database layer not ready")
        resp.media = {"status": "ok"}


async def database_error(req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: DatabaseError, params: dict) -> None:
    raise falcon.HTTPError(falcon.code_to_http_status(ex.status_code), description=str(ex))


app = falcon.asgi.App(middleware=[DatabaseLifespan(layer), RequireJSON()])
app.req_options.media_handlers[falcon.MEDIA_JSON] = LimitedJSONHandler()
app.add_error_handler(DatabaseError, database_error)

items = ItemsResource(layer)
app.add_route("/items", items)
app.add_route("/items/bulk", items, suffix="bulk")
app.add_route("/items/each", items, suffix="each")
app.add_route("/health", HealthResource(layer))
