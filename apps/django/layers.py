"""The database layer the views call: one of the shared layers (`apps._db`), or Django's own ORM.

`BENCH_DB=django` is the layer only this app has: the `SimpleText` model written through Django's async ORM
API, on the psycopg 3 connection pool Django opens from `DATABASES` (settings.py). Django runs each query
of that API as sync code in a thread (`sync_to_async`); under ASGI the thread is the request's own, and its
connection goes back to the pool when the request ends (`CONN_MAX_AGE = 0`).

- `insert_one`: `SimpleText.objects.acreate(text=…)`: one `INSERT … RETURNING id`, in autocommit;
- `insert_many`: `abulk_create`: one `INSERT … SELECT * FROM UNNEST(…) RETURNING id` (PostgreSQL returns
  the ids, in the rows' order), which Django wraps in its own atomic block: BEGIN, INSERT, COMMIT;
- `insert_each`: Django's `transaction.atomic` works in sync code only; as Django's docs advise for async
  code, the transaction is one sync function run with `sync_to_async`: BEGIN, N `INSERT … RETURNING id`
  (`objects.create`), COMMIT, on one connection, in the request's thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from asgiref.sync import sync_to_async
from django.db import DataError, IntegrityError, connection, transaction
from django.db import Error as DjangoDatabaseError

from apps._db import LAYERS, ConfigError, DatabaseError, DatabaseUnavailable, Layer, RowRejected
from apps._db import layer_from_env as shared_layer_from_env
from apps.django.models import SimpleText


def database_error(exc: DjangoDatabaseError) -> DatabaseError:
    """What to answer for an error from Django's ORM (psycopg's errors, wrapped in Django's classes)."""
    if isinstance(exc, DataError | IntegrityError):  # SQLSTATE classes 22 and 23, or a value psycopg refuses (NUL)
        return RowRejected(f"PostgreSQL rejected the row: {exc}")
    return DatabaseUnavailable(f"database unavailable: {type(exc).__name__}: {exc}")


def check_connection() -> None:
    """Open Django's pool and take a connection from it, then give it back."""
    connection.ensure_connection()
    connection.close()


@transaction.atomic
def create_each(texts: Sequence[str]) -> list[int]:
    return [SimpleText.objects.create(text=text).id for text in texts]


class DjangoOrm:
    ready = False

    async def start(self) -> None:
        try:
            await sync_to_async(check_connection)()
        except DjangoDatabaseError as exc:
            raise database_error(exc) from exc
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await sync_to_async(connection.close_pool)()

    async def insert_one(self, text: str) -> int:
        try:
            return (await SimpleText.objects.acreate(text=text)).id
        except DjangoDatabaseError as exc:
            raise database_error(exc) from exc

    async def insert_many(self, texts: Sequence[str]) -> list[int]:
        try:
            rows = await SimpleText.objects.abulk_create([SimpleText(text=text) for text in texts])
        except DjangoDatabaseError as exc:
            raise database_error(exc) from exc
        return [row.id for row in rows]

    async def insert_each(self, texts: Sequence[str]) -> list[int]:
        try:
            return await sync_to_async(create_each)(texts)
        except DjangoDatabaseError as exc:
            raise database_error(exc) from exc


def layer_from_env(environ: Mapping[str, str] = os.environ) -> Layer:
    """The layer BENCH_DB names: Django's ORM for `django`, else the shared layer of that name."""
    name = environ.get("BENCH_DB", "")
    if name == "django":
        return DjangoOrm()
    if name not in LAYERS:
        raise ConfigError(f"BENCH_DB={name!r} is not a database layer; set it to one of: {', '.join(LAYERS)}, django.")
    return shared_layer_from_env(environ)


layer = layer_from_env()
