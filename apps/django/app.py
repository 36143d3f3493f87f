"""Django, as its docs write an async JSON API: a project in this one folder (settings.py, urls.py, views.py,
models.py), `async def` views answering `JsonResponse`, routed by a URLconf, served by Django's own ASGI
handler (`get_asgi_application()`).

Besides the shared database layers, it has one of its own, `django`: the `SimpleText` model written through
Django's async ORM API on Django's psycopg 3 pool (layers.py says how each shape is written). Django answers
`http` scopes only and has no ASGI lifespan, so the application is Django's wrapped, as its docs allow
("Applying ASGI middleware"), in a lifespan that starts and stops the database layer, as every other app's does.
"""

import os

from django.core.asgi import get_asgi_application

DB_LAYERS = ("none", "asyncpg", "coalesced", "core", "orm")
OWN_LAYERS = ("django",)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.django.settings")
django_application = get_asgi_application()  # django.setup(): the settings, then the app registry

from apps.django.layers import layer  # noqa: E402  (its model needs the app registry: after setup)


async def app(scope: dict, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    else:
        await django_application(scope, receive, send)


async def lifespan(receive, send) -> None:
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
