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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER_REGISTRY = ROOT / "apps" / "_db" / "__init__.py"
SHAPES = ("one", "bulk", "each", "get")  # one insert; N in one statement; N statements in one transaction; GET form
KINDS = ("cpu", "instructions", "profile")  # a CPU-time window, a callgrind window, a profiled window
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
)}


@dataclass(frozen=True)
class Knob:
    """A named change a user can copy into their own app, measured beside the cell without it.

    The harness applies it through the server's environment (``env``); the apps and layers that support it read
    those variables. It applies to the cells whose layer and framework it names (none named: all of them).
    """

    name: str
    change: str  # the change in words, as the report says it
    code: str  # the line or two it takes in a user's app
    env: tuple[tuple[str, str], ...]  # what the harness sets for the server
    layers: tuple[str, ...] = ()
    frameworks: tuple[str, ...] = ()
    not_for: tuple[str, ...] = ()  # frameworks whose code does not read ``env`` (the original app, as published)

    def applies_to(self, framework: str, db: str) -> bool:
        return ((not self.layers or db in self.layers) and (not self.frameworks or framework in self.frameworks)
                and framework not in self.not_for)


KNOBS: dict[str, Knob] = {knob.name: knob for knob in (
    Knob("pool4", "a pool of 4 connections per worker instead of 20 (TechEmpower's fastest Python entries)",
         "asyncpg.create_pool(dsn, min_size=4, max_size=4)  # or create_async_engine(url, pool_size=4)",
         env=(("BENCH_POOL_SIZE", "4"),), layers=("asyncpg", "coalesced", "core", "orm"), not_for=("seed",)),
)}


def registered_layers(source: Path = LAYER_REGISTRY) -> tuple[str, ...]:
    """The layer names of ``apps/_db``'s ``LAYERS`` dict, in its order, read from the source."""
    for node in ast.parse(source.read_text(encoding="utf-8"), filename=str(source)).body:
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0] if isinstance(
            node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id == "LAYERS" and node.value is not None:
            return tuple(ast.literal_eval(node.value))
    raise ValueError(f"{source} has no literal LAYERS = {{name: 'module:Class', …}}")


LAYERS = registered_layers()  # display order: the registry's
