"""The Django project's settings, read from the environment as the other apps read theirs.

A JSON API and nothing else: no templates, static files, admin, sessions or auth; DEBUG off; only the
middleware a project keeps for an API (security headers, CommonMiddleware, CSRF, which the views opt out of).
The database is configured only for the `django` layer (BENCH_DB=django), from BENCH_DSN: PostgreSQL through
psycopg 3 and its connection pool, BENCH_POOL_SIZE connections (default 20); every other layer brings its own
connections and Django runs with no database at all.
"""

import os
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from apps._db import DEFAULT_POOL_SIZE, ConfigError, timeouts_from_env
from apps._db.base import PSYCOPG_RECONNECT_TIMEOUT, milliseconds

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
SECRET_KEY = "insertbench: nothing here is signed"  # Django requires one; no session, cookie or token uses it
ROOT_URLCONF = "apps.django.urls"
INSTALLED_APPS = ["apps.django"]  # for the SimpleText model
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # a larger body raises RequestDataTooBig: the views answer 413
USE_TZ = True
TIME_ZONE = "UTC"
LOGGING = {  # Django's default also mails admins on errors; here they go to stderr, the server's log
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "WARNING"}},
}


def database(dsn: str, pool_size: int, acquire_timeout: float, statement_timeout: float) -> dict:
    """DATABASES["default"] for a postgresql://user:password@host:port/dbname?option=value URL, with the shared
    layers' bounds: the pool's `timeout` a request waits for a free connection before it fails (503;
    BENCH_ACQUIRE_TIMEOUT) and PostgreSQL's `statement_timeout` on each connection (BENCH_STATEMENT_TIMEOUT)."""
    url = urlsplit(dsn)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(url.path.lstrip("/")),
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": url.hostname or "",
        "PORT": str(url.port or ""),
        "CONN_MAX_AGE": 0,  # the pool keeps the connections; Django returns each one at the end of its request
        "OPTIONS": {
            "options": f"-c statement_timeout={milliseconds(statement_timeout)}",
            **dict(parse_qsl(url.query)),  # libpq parameters (sslmode=…), as psycopg reads them from a URL
            "pool": {"min_size": pool_size, "max_size": pool_size, "timeout": acquire_timeout,
                     "reconnect_timeout": PSYCOPG_RECONNECT_TIMEOUT},
        },
    }


def pool_size_from(environ: Mapping[str, str]) -> int:
    value = environ.get("BENCH_POOL_SIZE", str(DEFAULT_POOL_SIZE))
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"BENCH_POOL_SIZE={value!r} must be a positive integer (default {DEFAULT_POOL_SIZE}).")
    return int(value)


if os.environ.get("BENCH_DB") == "django":
    if not os.environ.get("BENCH_DSN", "").startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "BENCH_DSN is missing or not a postgresql:// URL, and BENCH_DB='django' needs it; "
            "set it to e.g. postgresql://user:password@127.0.0.1:5432/dbname."
        )
    DATABASES = {"default": database(os.environ["BENCH_DSN"], pool_size_from(os.environ),
                                     **timeouts_from_env(os.environ))}
else:
    DATABASES = {}
