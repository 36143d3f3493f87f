"""A 1 MiB request-body limit answering 413 with a JSON body, for the FastAPI and Starlette apps.

Their own `max_body_size` (Starlette's RequestBodyLimitMiddleware) replaces any response to a request
whose Content-Length is over the limit with a plain-text 413, and the contract wants JSON for every 4xx.
A declared Content-Length is checked before the app runs (the servers deliver no more than it declares);
a body without one is counted as it arrives and stopped by an HTTPException, which the app's own
exception handling turns into its JSON error.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_SIZE = 1024 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_size: int = MAX_BODY_SIZE) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None:
            await self.app(scope, self._counting(receive), send)
        elif declared > self.max_body_size:
            await JSONResponse({"detail": "Content Too Large"}, status_code=413)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

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


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
