"""The section "Where the statements come from": per database layer (and knob), the statements a request runs by
kind, and in words where the most come from; for a user's app (--app) the same per server, and what to try.

The figures are each cell's medians per request of its samples' ``statements_by_kind`` (``analysis.statements``),
then for a layer the median over its cells (every framework and server). A run recorded before samples counted
their statements by kind (or without pg_stat_statements) has no section.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

from harness.analysis import statements
from harness.analysis.stats import CellStats
from harness.analysis.summary import Analysis
from harness.model import Cell
from harness.report.format import per_insert, table

TITLE = "Where the statements come from"
HEADINGS = {"begin": "BEGIN", "commit": "COMMIT", "rollback": "ROLLBACK", "insert": "INSERT", "reset": "pool reset",
            "ping": "ping", "other": "other"}
NOTE = ("Statements per request by kind, from `pg_stat_statements` (median over each layer's cells of each cell's "
        "median over its samples). *pool reset* is what a pool runs when a connection comes back: asyncpg's default "
        "reset on release, `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`, is one round trip "
        "and four statements. *ping* is a `SELECT 1` checking a connection before use; SQLAlchemy's `pool_pre_ping` "
        "over asyncpg shows as BEGIN and ROLLBACK instead (its ping, an empty query, is not recorded).")
EPSILON = 0.0005  # below this many per request a kind is left out of the words


def cell_figures(analysis: Analysis, cell: Cell) -> dict[str, float] | None:
    """A cell's statements per request by stored key (``insert:<table>`` apart), None where not recorded."""
    return statements.per_request(s for s in analysis.run.samples if s.cell == cell)


def _median(figures: list[dict[str, float]]) -> dict[str, float]:
    keys = dict.fromkeys(k for f in figures for k in f)
    return {k: statistics.median(f.get(k, 0.0) for f in figures) for k in keys}


def _layer(cell: Cell) -> str:
    many = f" ×{cell.inserts_per_request} {cell.shape}" if cell.inserts_per_request != 1 else ""
    return (f"`{cell.db}`{many}" + (" GET" if cell.shape == "get" else "")
            + (f" +{cell.knob}" if cell.knob else ""))


def _n(x: float) -> str:
    return str(round(x)) if abs(x - round(x)) < EPSILON * 10 else per_insert(x)


def _times(x: float, word: str, bare: bool = False) -> str:
    """"2 BEGINs", "0.043 INSERT", "1 ping"; once and ``bare``: "BEGIN"."""
    n = _n(x)
    if n == "1":
        return word if bare else f"1 {word}"
    return f"{n} {word}s" if x > 1 else f"{n} {word}"


def _listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def explain(per_request: Mapping[str, float]) -> str:
    """Where a request's statements come from, in words: "4 INSERTs into `simple_text`, BEGIN, COMMIT and 4
    statements of the pool's reset"."""
    kinds = statements.columns(per_request)
    parts = [f"{_times(n, 'INSERT')} into `{t}`" for t, n in statements.inserts(per_request).items() if n >= EPSILON]
    parts += [_times(kinds[k], HEADINGS[k], bare=True) for k in ("begin", "commit", "rollback") if kinds[k] >= EPSILON]
    words = {"reset": ("statement", " of the pool's reset"), "ping": ("ping", " (`SELECT 1`)"),
             "other": ("other statement", "")}
    parts += [_times(kinds[k], word) + tail for k, (word, tail) in words.items() if kinds[k] >= EPSILON]
    return _listed(parts) if parts else "none"


def findings(per_request: Mapping[str, float]) -> list[str]:
    """What a request's statements by kind suggest trying, one sentence each: a pool reset per request, a
    transaction around a single INSERT, a ping per request, transactions rolled back (empty when none applies)."""
    kinds = statements.columns(per_request)
    found = []
    if kinds["reset"] >= 0.5:
        found.append(f"{_n(kinds['reset'])} statements per request are the pool's reset on release (asyncpg runs "
                     "`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;` each time a connection "
                     "goes back): where the app leaves no session state behind, a pool `reset` that sends nothing "
                     "(`asyncpg.create_pool(dsn, reset=keep_session)` with `async def keep_session(conn): pass`) "
                     "saves them; asyncpg still rolls back a transaction left open.")
    if abs(kinds["insert"] - 1) < 0.05 and kinds["begin"] >= 0.95 and kinds["commit"] >= 0.95:
        found.append("Each request wraps its one INSERT in BEGIN … COMMIT: a single statement is atomic on its own, "
                     "so in autocommit it is one statement instead of three (this run's `asyncpg` layer against "
                     "`core` and `orm`).")
    if kinds["ping"] >= 0.5:
        found.append(f"{_times(kinds['ping'], 'ping')} (`SELECT 1`) per request: the pool checks each connection "
                     "before handing it out (SQLAlchemy's `pool_pre_ping`, Django's `CONN_HEALTH_CHECKS`); without "
                     "it a dropped connection fails one request instead.")
    if kinds["rollback"] >= 0.5:
        found.append(f"{_times(kinds['rollback'], 'ROLLBACK')} per request: transactions that end without a COMMIT, "
                     "such as SQLAlchemy's `pool_pre_ping` over asyncpg (BEGIN and ROLLBACK around its ping) or a "
                     "session closed without committing.")
    return found


def _groups(cells: Iterable[CellStats]) -> dict[Cell, list[CellStats]]:
    """The matrix's cells by layer, inserts per request, shape and knob (one interpreter stands for all)."""
    groups: dict[Cell, list[CellStats]] = {}
    for c in cells:
        if c.ok and not c.key.python:
            groups.setdefault(Cell("", "", c.key.db, c.key.inserts_per_request, c.key.shape, knob=c.key.knob),
                              []).append(c)
    return groups


def _row(label: str, figures: dict[str, float], totals: list[float], cells: int | str) -> list[str]:
    spread = (f" ({per_insert(min(totals))}–{per_insert(max(totals))})"
              if max(totals) - min(totals) > 0.01 * max(totals) else "")
    kinds = statements.columns(figures)
    return [label, f"**{per_insert(sum(kinds.values()))}**{spread}", *(per_insert(kinds[k]) if kinds[k] else "—"
                                                                      for k in statements.KINDS), str(cells)]


def section(analysis: Analysis) -> str | None:
    """Per layer (and knob): statements per request by kind, and where the most per insert come from; None when
    the run recorded no statements by kind."""
    rows, layers = [], []
    for key, cells in _groups(analysis.matrix).items():
        recorded = [f for c in cells if (f := cell_figures(analysis, c.key)) is not None]
        if not recorded:
            continue
        figures = _median(recorded)
        if sum(figures.values()) < EPSILON:
            continue  # the `none` layer: no statement
        rows.append(_row(_layer(key), figures, [sum(f.values()) for f in recorded], len(recorded)))
        layers.append((sum(figures.values()) / key.inserts_per_request, key, figures))
    if not layers:
        return None
    header = ["layer", "statements/request", *(HEADINGS[k] for k in statements.KINDS), "cells"]
    return "\n\n".join([table(header, rows, "l" + "r" * (len(header) - 1)), _most(layers), NOTE])


def _most(layers: list[tuple[float, Cell, dict[str, float]]]) -> str:
    """Where the statements of the layer with the most per insert come from (layers alike in that, named together)."""
    top, _, figures = max(layers, key=lambda layer: layer[0])
    words = explain(figures)
    alike = [_layer(key) for each_insert, key, f in layers if each_insert >= top * 0.995 and explain(f) == words]
    each = " each" if len(alike) > 1 else ""
    return (f"{_listed(alike)} run{'' if alike[1:] else 's'} the most statements per insert: "
            f"{_n(sum(figures.values()))} per request{each}, from {words}.")


def own_part(analysis: Analysis) -> str | None:
    """A user's app's statements per request by kind, per server, and what they suggest trying."""
    lines, found = [], {}
    for c in (c for c in analysis.own if c.ok):
        figures = cell_figures(analysis, c.key)
        if figures is None:
            continue
        lines.append(f"- {c.key.server}: {_n(sum(figures.values()))} per request: {explain(figures)}")
        found |= dict.fromkeys(findings(figures))
    if not lines:
        return None
    text = "Statements per request, by kind (from `pg_stat_statements`, median):\n\n" + "\n".join(lines)
    return text + ("\n\nWhat they suggest trying:\n\n" + "\n".join(f"- {f}" for f in found) if found else "")
