"""The request-body rules FastAPI and Starlette need help with, answered in JSON as the contract wants:
a POST body must be declared as JSON (415) and at most 1 MiB (413).

Starlette's `request.json()` parses whatever it is sent, and FastAPI parses any `application/*+json` body,
so a POST whose Content-Type is not `application/json` (parameters such as `; charset=utf-8` allowed, any
case) is refused here, as the bare and Litestar apps refuse it: every framework does the same work.
Their own `max_body_size` (Starlette's RequestBodyLimitMiddleware) answers 413 in plain text. A declared
Content-Length is checked before the app runs (the servers deliver no more than it declares); a body
without one is counted as it arrives and stopped by an HTTPException, which the app's own exception
handling turns into its JSON error. Both rules cost one pass over the request's headers.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_SIZE = 1024 * 1024


class JsonBody:
    def __init__(self, app: ASGIApp, max_body_size: int = MAX_BODY_SIZE) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        media_type, length = _content_headers(scope["headers"])
        if scope["method"] == "POST" and media_type != b"application/json":
            detail = "request body must be JSON, sent with Content-Type: application/json"
            await JSONResponse({"detail": detail}, status_code=415)(scope, receive, send)
        elif length is not None and length > self.max_body_size:
            await JSONResponse({"detail": "Content Too Large"}, status_code=413)(scope, receive, send)
        else:
            await self.app(scope, receive if length is not None else self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_size:
                raise HTTPException(status_code=413, detail="Content Too Large")
            return message

        return receive_within_limit


def _content_headers(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, int | None]:
    """The declared media type (lower case, parameters dropped) and Content-Length, None where absent."""
    media_type = length = None
    for name, value in headers:
        if name == b"content-type":
            media_type = value.split(b";", 1)[0].strip().lower()
        elif name == b"content-length" and value.isdigit():
            length = int(value)
    return media_type, length
