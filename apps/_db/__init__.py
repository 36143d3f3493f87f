"""Database layers shared by every app: the same INSERT done six ways (apps/README.md, "The database layers").

An app calls `layer_from_env()` once, `start()`/`stop()` in its lifespan, and `insert_one` / `insert_many`
per request; a failure arrives as a `DatabaseError` carrying the status code to answer with.

Besides BENCH_DB, BENCH_DSN and BENCH_POOL_SIZE, every layer with a database takes two bounds, in seconds:
BENCH_ACQUIRE_TIMEOUT, how long a request waits for a free connection, and BENCH_STATEMENT_TIMEOUT, how long
PostgreSQL runs one of its statements (its `statement_timeout`); past either the request fails with
DatabaseUnavailable (503), so a stalled database never holds a request without bound.

A few variables (`KNOBS`) change how a layer writes, each in a line or two a user could copy into their own app
(the layer's docstring shows them). A value a knob does not take, or a knob set on a layer it does not change,
stops the app at start with a ConfigError.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Mapping

from apps._db.base import (
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    Layer,
    RowRejected,
)

__all__ = [
    "DEFAULT_ACQUIRE_TIMEOUT",
    "DEFAULT_STATEMENT_TIMEOUT",
    "KNOBS",
    "LAYERS",
    "ConfigError",
    "DatabaseError",
    "DatabaseUnavailable",
    "Layer",
    "RowRejected",
    "knobs_from_env",
    "layer_from_env",
    "timeouts_from_env",
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
TIMEOUTS = {"BENCH_ACQUIRE_TIMEOUT": DEFAULT_ACQUIRE_TIMEOUT, "BENCH_STATEMENT_TIMEOUT": DEFAULT_STATEMENT_TIMEOUT}

# BENCH_* variable -> (the values it takes, its default first; the layers it changes). A layer receives it as
# the keyword named after it (BENCH_PRE_PING -> pre_ping): True or False for 0/1, else the value.
KNOBS = {
    "BENCH_AUTOCOMMIT": (("0", "1"), ("core", "orm")),  # single-statement writes without BEGIN/COMMIT
    "BENCH_TRANSACTION": (("0", "1"), ("asyncpg", "psycopg")),  # single-statement writes inside BEGIN/COMMIT
    "BENCH_POOL_RESET": (("0", "1"), ("asyncpg", "coalesced")),  # asyncpg's reset query on every release
    "BENCH_PRE_PING": (("0", "1"), ("core", "orm")),  # SQLAlchemy's pool_pre_ping on every checkout
    "BENCH_SA_DRIVER": (("asyncpg", "psycopg"), ("core", "orm")),  # the driver under SQLAlchemy
}


def layer_from_env(environ: Mapping[str, str] = os.environ) -> Layer:
    """The layer named by BENCH_DB, configured from BENCH_DSN, BENCH_POOL_SIZE and its KNOBS (not yet started)."""
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
    timeouts = timeouts_from_env(environ) if layer_class.needs_dsn else {}
    return layer_class(dsn, int(pool_size), **timeouts, **knobs_from_env(name, environ))


def timeouts_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, float]:
    """`acquire_timeout` and `statement_timeout`, in seconds, from BENCH_ACQUIRE_TIMEOUT and BENCH_STATEMENT_TIMEOUT."""
    timeouts = {}
    for variable, default in TIMEOUTS.items():
        value = environ.get(variable, str(default))
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (0 < seconds < math.inf):
            raise ConfigError(f"{variable}={value!r} must be a positive number of seconds (default {default:g}).")
        timeouts[variable.removeprefix("BENCH_").lower()] = seconds
    return timeouts


def knobs_from_env(name: str, environ: Mapping[str, str] = os.environ) -> dict[str, bool | str]:
    """The keyword arguments the KNOBS set in `environ` give layer `name`; a value it cannot take is refused."""
    knobs: dict[str, bool | str] = {}
    for variable, (values, layers) in KNOBS.items():
        value = environ.get(variable, values[0])
        if value not in values:
            raise ConfigError(f"{variable}={value!r} is not one of {', '.join(values)}; set one of them or unset it "
                              f"(default {values[0]}).")
        if name not in layers:
            if value != values[0]:
                which = f"the {' and '.join(layers)} layer" + ("s" if len(layers) > 1 else "")
                raise ConfigError(f"{variable}={value} changes {which} only, not BENCH_DB={name!r}; unset it, or set "
                                  f"BENCH_DB to {'one of those' if len(layers) > 1 else repr(layers[0])}.")
            continue
        knobs[variable.removeprefix("BENCH_").lower()] = value == "1" if values == ("0", "1") else value
    return knobs
