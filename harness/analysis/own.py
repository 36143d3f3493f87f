"""A user's own app (``--app``) in a run: its cells apart from the matrix's, and its rows and statements per request.

An own app's cell (``db == "app"``) counts "per insert" per request, so its CPU per request sits beside the
matrix cells' CPU per request, one insert per request each.
"""

from __future__ import annotations

import statistics
from typing import Any

from harness.analysis.stats import CellStats
from harness.axes import OWN_DB
from harness.model import Cell, Run


def split(cells: list[CellStats]) -> tuple[list[CellStats], list[CellStats]]:
    """(the own app's cells, the matrix's)."""
    return [c for c in cells if c.key.db == OWN_DB], [c for c in cells if c.key.db != OWN_DB]


def per_request(run: Run) -> dict[Cell, tuple[float | None, float | None]]:
    """Each cell's median rows written and statements run per request (matrix.csv's last two columns).

    Rows: for an own app, inserted + updated + deleted over every table; for a matrix cell, the rows it inserted
    (none for the `none` layer, which stores nothing)."""
    figures = {}
    for cell in run.cells:
        good = [s for s in run.samples if s.cell == cell and s.kind == "cpu" and s.ok and s.requests_ok]
        if cell.db == OWN_DB:
            rows = [sum(sum(t.values()) for t in (s.extra or {}).get("tables", {}).values()) for s in good]
        else:
            rows = [0 if cell.db == "none" else s.inserts or 0 for s in good]
        statements = [s.statements / s.requests_ok for s in good if s.statements is not None]
        figures[cell] = (statistics.median(r / s.requests_ok for r, s in zip(rows, good, strict=True))
                         if good else None, statistics.median(statements) if statements else None)
    return figures


def tables_per_request(samples: list[Any]) -> dict[str, dict[str, float]]:
    """Median rows per request, per table and kind ("inserted", "updated", "deleted"), over good CPU samples."""
    good = [s for s in samples if s.ok and s.kind == "cpu" and s.requests_ok and (s.extra or {}).get("tables")
            is not None]
    names = sorted({t for s in good for t in s.extra["tables"]})
    return {table: {kind: statistics.median(s.extra["tables"].get(table, {}).get(kind, 0) / s.requests_ok
                                            for s in good) for kind in ("inserted", "updated", "deleted")}
            for table in names}
