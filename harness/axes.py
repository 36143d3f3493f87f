"""The axes of the matrix, each listed once: servers, database layers, request shapes, sample kinds.

Every wing derives from these registries, as uvicorn's ``config.py`` maps names to implementations: a server is
one ``SERVERS`` entry (its command, the modules an interpreter needs to run it, the packages whose versions a run
records) plus its pin in ``pyproject.toml``; a database layer is its class in ``apps/_db`` plus one line of that
package's ``LAYERS``, which is read here without importing it (the harness never imports a driver to plan a
run). Charts take a layer's colour from its place in ``LAYERS``; a layer an older run names and the registry
does not gets a colour of its own all the same.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER_REGISTRY = ROOT / "apps" / "_db" / "__init__.py"
SHAPES = ("one", "bulk", "each", "get")  # one insert; N in one statement; N statements in one transaction; GET form
SOAK = "soak"  # one of a soak's consecutive windows on one server (--soak: planned by harness.measure.soak)
KINDS = ("cpu", "instructions", "profile", SOAK)  # a CPU-time window, a callgrind window, a profiled window, a soak's
OWN_DB = "app"  # the db coordinate of a user's own app's cells (--app)


@dataclass(frozen=True)
class Server:
    """An ASGI server: how to start it, and what an interpreter must have to run it."""

    name: str
    command: tuple[str, ...]  # a template: {python} {module} {attr} {port} {workers}
    modules: tuple[str, ...]  # importable in the serving interpreter (checked for --app-python)
    packages: tuple[str, ...] = ()  # whose versions a run records (default: the modules)
    interface: str = "asgi"  # what it speaks to the app: a cell exists where an app speaks it too (INTERFACES)

    @property
    def recorded(self) -> tuple[str, ...]:
        return self.packages or self.modules


SERVERS: dict[str, Server] = {server.name: server for server in (
    Server("uvicorn", ("{python}", "-m", "uvicorn", "{module}:{attr}", "--host", "127.0.0.1", "--port", "{port}",
                       "--workers", "{workers}", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                       "--log-level", "warning"),
           modules=("uvicorn", "uvloop", "httptools")),
    Server("granian", ("{python}", "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}",
                       "--workers", "{workers}", "--loop", "uvloop", "--log-level", "warning", "{module}:{attr}"),
           modules=("granian", "uvloop")),
    Server("granian-rsgi", ("{python}", "-m", "granian", "--interface", "rsgi", "--host", "127.0.0.1", "--port",
                            "{port}", "--workers", "{workers}", "--loop", "uvloop", "--log-level", "warning",
                            "{module}:{attr}"),
           modules=("granian", "uvloop"), packages=("granian",), interface="rsgi"),
    # the floor under every server: a raw asyncio Protocol on uvloop that finds each request's end and answers
    # it, no HTTP parser, no interface; it serves the floor app only (harness.measure.floor)
    Server("uvloop", ("{python}", "-m", "{module}", "{port}"), modules=("uvloop",), interface="protocol"),
)}
FLOOR = "floor"  # the floor's framework name: its cell is read against every bare cell, not in the grids


@dataclass(frozen=True)
class Knob:
    """A named change a user can copy into their own app, measured beside the cell without it.

    The harness applies it three ways, whichever the cell's app takes: through the server's environment
    (``env``, read by ``apps/_db`` and the apps), as an edit of the original app's published source (``patch``:
    each ``(old, new)`` replaced once; the report says the change), or, for a change that needs no code
    (``gc``), by serving the app through a module that imports it and then tunes its garbage collector. It
    applies to the cells whose layer, framework and shape it names (none named: all of them). Knobs combine:
    a cell's ``knob`` is their names joined by "+", in this registry's order (``knob_names``).
    """

    name: str
    change: str  # the change in words, as the report says it
    code: str  # the line or two it takes in a user's app
    env: tuple[tuple[str, str], ...] = ()  # what the harness sets for the server (our apps read it)
    layers: tuple[str, ...] = ()
    frameworks: tuple[str, ...] = ()
    not_for: tuple[str, ...] = ()  # frameworks whose code does not read ``env`` (the original app, as published)
    patch: tuple[tuple[str, str], ...] = ()  # the original app's source, edited (it reads no env)
    gc: str = ""  # "freeze" or "off": applied around any app, a user's own too, with no code change
    shapes: tuple[str, ...] = ()  # the request shapes it fits (none named: all)
    group: str = ""  # knobs of one group exclude each other (two ways to do one thing)
    in_stack: bool = False  # a step the in-stack ladder may take (a FastAPI + SQLAlchemy user's own change)
    pins: tuple[str, ...] = ()  # other package versions: the cell is served from a virtualenv with these pins

    def applies_to(self, framework: str, db: str, shape: str = "one", patched: bool = False) -> bool:
        """Whether this knob changes the cell; ``patched`` says the framework is one that takes ``patch``."""
        if self.shapes and shape not in self.shapes:
            return False
        if self.gc:
            return framework != FLOOR  # the floor is no Python app to tune
        if self.pins:
            return not self.frameworks or framework in self.frameworks
        if patched:
            return bool(self.patch) and (not self.layers or db in self.layers)
        return ((not self.layers or db in self.layers) and (not self.frameworks or framework in self.frameworks)
                and framework not in self.not_for and bool(self.env))


KNOBS: dict[str, Knob] = {knob.name: knob for knob in (
    Knob("autocommit", "autocommit for single-statement writes: no BEGIN and COMMIT around one INSERT",
         'create_async_engine(url, isolation_level="AUTOCOMMIT")',
         env=(("BENCH_AUTOCOMMIT", "1"),), layers=("core", "orm"), shapes=("one", "get", "bulk"), in_stack=True,
         patch=(("poolclass=AsyncAdaptedQueuePool,", 'poolclass=AsyncAdaptedQueuePool,\n        '
                                                     'isolation_level="AUTOCOMMIT",'),)),
    Knob("transaction", "one INSERT inside a transaction (BEGIN, INSERT, COMMIT), as SQLAlchemy runs it",
         "async with pool.acquire() as conn, conn.transaction(): await conn.fetchval(INSERT, text)  # psycopg: "
         "pool.connection()",
         env=(("BENCH_TRANSACTION", "1"),), layers=("asyncpg", "psycopg"), shapes=("one", "get")),
    Knob("reset", "asyncpg's pool resets each connection on release (its default; the layers switch it off)",
         "asyncpg.create_pool(dsn)  # without reset=…: the reset query runs on every release",
         env=(("BENCH_POOL_RESET", "1"),), layers=("asyncpg", "coalesced")),
    Knob("pre_ping", "the pool pings each connection when it is checked out",
         "create_async_engine(url, pool_pre_ping=True)", env=(("BENCH_PRE_PING", "1"),), layers=("core", "orm"),
         patch=(("poolclass=AsyncAdaptedQueuePool,", "poolclass=AsyncAdaptedQueuePool,\n        "
                                                                    "pool_pre_ping=True,"),)),
    Knob("psycopg", "SQLAlchemy over psycopg 3 (async) instead of asyncpg",
         'create_async_engine("postgresql+psycopg://…")', env=(("BENCH_SA_DRIVER", "psycopg"),),
         layers=("core", "orm"), in_stack=True,
         patch=(('"postgresql+asyncpg://"', '"postgresql+psycopg://"'),)),
    Knob("pool4", "a pool of 4 connections per worker instead of 20 (TechEmpower's fastest Python entries)",
         "asyncpg.create_pool(dsn, min_size=4, max_size=4)  # or create_async_engine(url, pool_size=4)",
         env=(("BENCH_POOL_SIZE", "4"),), layers=("asyncpg", "coalesced", "core", "orm", "psycopg"),
         in_stack=True, patch=(("        pool_size=20,\n", "        pool_size=4,\n"),)),
    Knob("response", "the handler returns a Response it builds, so FastAPI neither validates nor encodes it",
         "return JSONResponse({\"id\": new_id}, status_code=201)", env=(("BENCH_RESPONSE", "response"),),
         frameworks=("fastapi",), group="response", in_stack=True,
         patch=(("from fastapi import FastAPI, Query, Request",
                 "from fastapi import FastAPI, Query, Request\nfrom fastapi.responses import JSONResponse"),
                ('return {"id": inserted_id, "duration": duration, "cpu_duration": cpu_duration}',
                 'return JSONResponse({"id": inserted_id, "duration": duration, "cpu_duration": cpu_duration})'),
                ('return {"ids": inserted_ids, "duration": duration, "cpu_duration": cpu_duration}',
                 'return JSONResponse({"ids": inserted_ids, "duration": duration, "cpu_duration": cpu_duration})'))),
    Knob("model", "FastAPI validates the handler's dict through response_model instead of a declared return type",
         "@app.post(\"/items\", response_model=Created, status_code=201)", env=(("BENCH_RESPONSE", "model"),),
         frameworks=("fastapi",), group="response"),
    Knob("gcfreeze", "the collector's startup objects frozen and its first generation collected less often",
         "gc.freeze(); gc.set_threshold(50_000, 20, 20)  # once the app is imported", gc="freeze", group="gc",
         in_stack=True),
    Knob("gcoff", "the cyclic garbage collector switched off (a bound, not advice)", "gc.disable()", gc="off",
         group="gc"),
    # the question was asked in early 2025 (a copy of it is dated 2025-05-11): the releases of that winter
    Knob("pins2025", "the package versions of the question's time (early 2025) instead of today's pins",
         "fastapi==0.115.8 starlette==0.45.3 pydantic==2.10.6 sqlalchemy[asyncio]==2.0.37 asyncpg==0.30.0 "
         "uvicorn==0.34.0 uvloop==0.21.0 httptools==0.6.4", frameworks=("seed",),
         pins=("fastapi==0.115.8", "starlette==0.45.3", "pydantic==2.10.6", "pydantic-core==2.27.2",
               "sqlalchemy[asyncio]==2.0.37", "asyncpg==0.30.0", "uvicorn==0.34.0", "uvloop==0.21.0",
               "httptools==0.6.4")),
)}


def knob_names(knob: str) -> tuple[str, ...]:
    """The knobs a cell's ``knob`` names, in the registry's order ("" names none)."""
    return tuple(name for name in knob.split("+") if name) if knob else ()


def knob_join(names: Iterable[str]) -> str:
    """The ``knob`` of a cell with these knobs: their names in the registry's order (unknown ones last)."""
    wanted = set(names)
    order = [name for name in KNOBS if name in wanted] + sorted(wanted - set(KNOBS))
    return "+".join(order)


def knob_fits(knob: str, name: str) -> bool:
    """Whether ``name`` can join the knobs of ``knob``: not already there, and none of its group there."""
    present = knob_names(knob)
    group = KNOBS[name].group
    return name not in present and not (group and any(KNOBS.get(p, Knob(p, "", "")).group == group
                                                      for p in present))


def registered_layers(source: Path = LAYER_REGISTRY) -> tuple[str, ...]:
    """The layer names of ``apps/_db``'s ``LAYERS`` dict, in its order, read from the source."""
    for node in ast.parse(source.read_text(encoding="utf-8"), filename=str(source)).body:
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0] if isinstance(
            node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id == "LAYERS" and node.value is not None:
            return tuple(ast.literal_eval(node.value))
    raise ValueError(f"{source} has no literal LAYERS = {{name: 'module:Class', …}}")


LAYERS = registered_layers()  # display order: the registry's
