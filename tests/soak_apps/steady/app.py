"""A soak test's steady app: the bare ASGI app, re-exported; it keeps nothing of the requests it answers."""

from apps.asgi.app import app

__all__ = ["app"]
