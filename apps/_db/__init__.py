"""Database layers shared by every app: the same INSERT done six ways (apps/README.md, "The database layers").

An app calls `layer_from_env()` once, `start()`/`stop()` in its lifespan, and `insert_one` / `insert_many`
per request; a failure arrives as a `DatabaseError` carrying the status code to answer with.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping

from apps._db.base import ConfigError, DatabaseError, DatabaseUnavailable, Layer, RowRejected

__all__ = [
    "LAYERS",
    "ConfigError",
    "DatabaseError",
    "DatabaseUnavailable",
    "Layer",
    "RowRejected",
    "layer_from_env",
]

# BENCH_DB value -> the class implementing it (imported on demand: the `none` layer needs no driver).
LAYERS = {
    "none": "apps._db.none:NoDatabase",
    "asyncpg": "apps._db.asyncpg_pool:AsyncpgPool",
    "coalesced": "apps._db.coalesced:Coalesced",
    "core": "apps._db.core:Core",
    "orm": "apps._db.orm:Orm",
    "psycopg": "apps._db.psycopg3:PsycopgPool",
}
DEFAULT_POOL_SIZE = 20


def layer_from_env(environ: Mapping[str, str] = os.environ) -> Layer:
    """The layer named by BENCH_DB, configured from BENCH_DSN and BENCH_POOL_SIZE (not yet started)."""
    name = environ.get("BENCH_DB", "")
    if name not in LAYERS:
        raise ConfigError(f"BENCH_DB={name!r} is not a database layer; set it to one of: {', '.join(LAYERS)}.")
    module_name, class_name = LAYERS[name].split(":")
    layer_class = getattr(importlib.import_module(module_name), class_name)
    dsn = environ.get("BENCH_DSN", "")
    if layer_class.needs_dsn and not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"BENCH_DSN={dsn!r} is missing or not a postgresql:// URL, and BENCH_DB={name!r} needs it; "
            "set it to e.g. postgresql://user:password@127.0.0.1:5432/dbname."
        )
    pool_size = environ.get("BENCH_POOL_SIZE", str(DEFAULT_POOL_SIZE))
    if not pool_size.isdigit() or int(pool_size) < 1:
        raise ConfigError(f"BENCH_POOL_SIZE={pool_size!r} must be a positive integer (default {DEFAULT_POOL_SIZE}).")
    return layer_class(dsn, int(pool_size))
