"""The bare ASGI app, re-exported: the cell that must still finish beside the faulty ones."""

from apps.asgi.app import app

__all__ = ["app"]
