"""A faulty app for the harness's tests: the bare app, but its readiness check never answers 200 (as an app whose
database layer never connects): every GET /health answers 503."""

import sys

from apps.asgi.app import app as bare

print("unready app: GET /health answers 503 for as long as I run", file=sys.stderr, flush=True)


async def app(scope, receive, send):
    async def unready(message):
        await send({**message, "status": 503} if message["type"] == "http.response.start" else message)

    await bare(scope, receive, unready if scope["type"] == "http" and scope["path"] == "/health" else send)
