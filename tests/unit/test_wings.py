"""The harness's layout: three wings along the data, no import circle, small modules.

measure starts processes and writes run.json; analysis is pure functions of a run; report renders files from a
run and its analysis and never imports measure (so rendering starts no process). Read from the source with
``ast`` (tests/system/test_wings.py imports the rendering wing in a fresh interpreter).
"""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "harness"
MAX_LINES = 440  # "no module over ~400 lines"


def module_name(path: Path) -> str:
    parts = path.relative_to(HARNESS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The harness modules ``path`` imports (``from harness.x import y``: harness.x, and harness.x.y if a module)."""
    modules = {module_name(p) for p in HARNESS.rglob("*.py")}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names} & modules
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("harness")}
    return found & modules


def graph(*, top_level_only: bool) -> dict[str, set[str]]:
    return {module_name(p): imports(p, top_level_only=top_level_only) for p in HARNESS.rglob("*.py")}


def test_the_report_and_analysis_wings_import_nothing_of_the_measuring_wing() -> None:
    for name, imported in graph(top_level_only=False).items():
        if name.startswith(("harness.report", "harness.analysis")):
            assert not {m for m in imported if m.startswith("harness.measure")}, name


def test_the_analysis_wing_imports_nothing_of_the_report() -> None:
    for name, imported in graph(top_level_only=False).items():
        if name.startswith("harness.analysis"):
            assert not {m for m in imported if m.startswith("harness.report")}, name


def test_the_formatting_leaf_imports_nothing_of_insertbench() -> None:
    assert imports(HARNESS / "report" / "format.py", top_level_only=False) == set()


def test_no_import_circle() -> None:
    edges = graph(top_level_only=False)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt == node or nxt in ("harness", f"{node}".rpartition(".")[0]):
                continue
            assert state.get(nxt) != 1, " → ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_no_module_is_long() -> None:
    long = {module_name(p): n for p in HARNESS.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long
