"""A soak test's leaking app: the bare ASGI app, keeping 1 KiB of every request it answers, forever.

At the soak test's few thousand requests a second that is megabytes a second: far past the soak's threshold
(1 MiB per 100,000 requests), and little enough for a shared machine.
"""

from apps.asgi.app import app as bare

GROWTH = 1024  # bytes kept per request
KEPT: list[bytes] = []


async def app(scope: dict, receive, send) -> None:
    if scope["type"] == "http" and scope["path"] != "/health":
        KEPT.append(b"\x01" * GROWTH)  # written, so its pages are resident (a calloc'd block may not be)
    await bare(scope, receive, send)
