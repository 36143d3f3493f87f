"""The apps under ``apps/``, discovered from the folder: nothing central lists them.

An app is a folder ``apps/<name>/`` with an ``app.py`` exposing ``app`` (an ASGI application); folders
whose name starts with ``_`` are shared code, not apps. An app may declare, as literal module-level
constants read here with ``ast`` (so discovery imports no framework):

- ``DB_LAYERS = ("orm",)`` — the shared database layers it runs with (default: all of ``axes.LAYERS``);
- ``OWN_LAYERS = ("django",)`` — layers only this app has (its framework's own ORM, say), which it implements
  itself when ``BENCH_DB`` names one; the matrix runs them beside the shared ones;
- ``ENDPOINT = "GET /test-insert"`` — its insert endpoint (default ``POST /items``); a ``GET`` endpoint
  takes the text in the query parameter ``text``;
- ``BULK_ENDPOINT`` / ``EACH_ENDPOINT`` — where it writes several rows per request, in one statement or one
  statement per row (defaults for a ``POST`` app: ``POST /items/bulk`` and ``POST /items/each``, taking
  ``{"texts": [...]}``; a ``GET`` app has none unless it declares one, which takes ``?n=N&text=T`` and
  writes ``T-0 … T-(N-1)``);
- ``INTERFACES = ("rsgi",)`` — the interfaces it speaks (default ``("asgi",)``); it runs under every server of
  ``axes.SERVERS`` that speaks one of them;
- ``GET_ENDPOINT = "GET /items"`` — the same insert with the text in the query string and no body to read
  (the bare app has one, to measure what reading a request body costs each server);
- ``PUBLISHED = True`` — the app is someone's published code (the original app): it reads no knob variables,
  and a knob is applied to it as an edit of its source (``axes.Knob.patch``, ``harness.measure.knobs``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import axes
from harness.axes import ROOT

APPS_DIR = ROOT / "apps"
DEFAULT_ENDPOINT = "POST /items"


@dataclass(frozen=True)
class App:
    """One framework app and what it supports."""

    name: str
    module: str  # importable with ``root`` on sys.path
    root: Path
    db_layers: tuple[str, ...]
    endpoints: dict[str, tuple[str, str]]  # shape → (method, path)
    attr: str = "app"  # the application's name in ``module``
    own: Any = None  # a user's app (``--app``): an ``own.OwnApp``, which says how to serve and load it
    interfaces: tuple[str, ...] = ("asgi",)  # what it speaks: ASGI, RSGI
    own_layers: tuple[str, ...] = ()  # of ``db_layers``, those only this app has (OWN_LAYERS)
    published: bool = False  # published code (PUBLISHED): knobs edit its source instead of setting variables

    def takes(self, knob: str, db: str, shape: str = "one") -> bool:
        """Whether every knob ``knob`` names changes this app's cell on ``db`` in ``shape``."""
        names = axes.knob_names(knob)
        return all(axes.KNOBS[n].applies_to(self.name, db, shape, patched=self.published)
                   if n in axes.KNOBS else False for n in names)

    def serves_under(self, server: str) -> bool:
        """Whether ``server`` speaks an interface this app speaks (so the cell exists)."""
        return server in axes.SERVERS and axes.SERVERS[server].interface in self.interfaces

    @property
    def method(self) -> str:
        return self.endpoints["one"][0]

    @property
    def path(self) -> str:
        return self.endpoints["one"][1]

    @property
    def bulk(self) -> bool:
        return "bulk" in self.endpoints

    def supports(self, db: str, inserts_per_request: int = 1, shape: str | None = None) -> bool:
        shape = shape or ("one" if inserts_per_request == 1 else "bulk")
        fits = (shape in ("one", "get")) == (inserts_per_request == 1)
        return db in self.db_layers and fits and shape in self.endpoints


def _constants(source: Path) -> dict[str, object]:
    """Module-level ``NAME = <literal>`` assignments of ``source``."""
    found: dict[str, object] = {}
    for node in ast.parse(source.read_text(), filename=str(source)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def load_app(folder: Path, package: str) -> App:
    constants = _constants(folder / "app.py")
    layers = tuple(constants.get("DB_LAYERS", axes.LAYERS))
    unknown = sorted(set(layers) - set(axes.LAYERS))
    if unknown:
        raise ValueError(f"{folder / 'app.py'}: DB_LAYERS names unknown layers {unknown}; valid: {list(axes.LAYERS)}"
                         " (a layer only this app has goes in OWN_LAYERS)")
    own_layers = tuple(constants.get("OWN_LAYERS", ()))
    if clash := sorted(set(own_layers) & set(axes.LAYERS)):
        raise ValueError(f"{folder / 'app.py'}: OWN_LAYERS {clash} are shared layers' names; give them names of "
                         "their own")
    layers += own_layers
    endpoints = {"one": _endpoint(str(constants.get("ENDPOINT", DEFAULT_ENDPOINT)))}
    post = endpoints["one"][0] == "POST"
    for shape, name, default in (("bulk", "BULK_ENDPOINT", "POST /items/bulk"),
                                 ("each", "EACH_ENDPOINT", "POST /items/each"), ("get", "GET_ENDPOINT", None)):
        declared = constants.get(name, default if post else None)
        if declared:
            endpoints[shape] = _endpoint(str(declared))
    interfaces = tuple(constants.get("INTERFACES", ("asgi",)))
    known = {server.interface for server in axes.SERVERS.values()}
    if unspoken := sorted(set(interfaces) - known):
        raise ValueError(f"{folder / 'app.py'}: INTERFACES names {unspoken}, which no server speaks; servers speak "
                         f"{sorted(known)}")
    return App(name=folder.name, module=f"{package}.{folder.name}.app", root=folder.parent.parent, db_layers=layers,
               endpoints=endpoints, interfaces=interfaces, own_layers=own_layers,
               published=bool(constants.get("PUBLISHED", False)))


def _endpoint(text: str) -> tuple[str, str]:
    method, path = text.split(maxsplit=1)
    return method.upper(), path


def discover(apps_dir: Path = APPS_DIR) -> dict[str, App]:
    """Every app folder under ``apps_dir``, by name, sorted."""
    folders = sorted(p for p in apps_dir.iterdir() if (p / "app.py").is_file() and not p.name.startswith("_"))
    return {folder.name: load_app(folder, apps_dir.name) for folder in folders}
