"""The apps under ``apps/``, discovered from the folder: nothing central lists them.

An app is a folder ``apps/<name>/`` with an ``app.py`` exposing ``app`` (an ASGI application); folders
whose name starts with ``_`` are shared code, not apps. An app may declare, as literal module-level
constants read here with ``ast`` (so discovery imports no framework):

- ``DB_LAYERS = ("orm",)`` — the database layers it runs with (default: all of ``LAYERS``);
- ``ENDPOINT = "GET /test-insert"`` — its insert endpoint (default ``POST /items``, which has a bulk
  twin at ``/items/bulk``); a ``GET`` endpoint takes the text in the query parameter ``text`` and has no
  bulk form.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS_DIR = ROOT / "apps"
LAYERS = ("none", "asyncpg", "coalesced", "core", "orm")
DEFAULT_ENDPOINT = "POST /items"


@dataclass(frozen=True)
class App:
    """One framework app and what it supports."""

    name: str
    module: str  # importable with ``root`` on sys.path
    root: Path
    db_layers: tuple[str, ...]
    method: str
    path: str
    bulk: bool

    def supports(self, db: str, inserts_per_request: int = 1) -> bool:
        return db in self.db_layers and (inserts_per_request == 1 or self.bulk)


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
    layers = tuple(constants.get("DB_LAYERS", LAYERS))
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
        raise ValueError(f"{folder / 'app.py'}: DB_LAYERS names unknown layers {unknown}; valid: {list(LAYERS)}")
    method, path = str(constants.get("ENDPOINT", DEFAULT_ENDPOINT)).split(maxsplit=1)
    return App(name=folder.name, module=f"{package}.{folder.name}.app", root=folder.parent.parent, db_layers=layers,
               method=method.upper(), path=path, bulk=method.upper() == "POST")


def discover(apps_dir: Path = APPS_DIR) -> dict[str, App]:
    """Every app folder under ``apps_dir``, by name, sorted."""
    folders = sorted(p for p in apps_dir.iterdir() if (p / "app.py").is_file() and not p.name.startswith("_"))
    return {folder.name: load_app(folder, apps_dir.name) for folder in folders}
