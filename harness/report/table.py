"""matrix.csv (one row per cell, every figure) and the plain-text table printed at the end of a run (with a line
per soaked cell)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from harness.analysis import statements
from harness.analysis.stats import CellStats
from harness.analysis.summary import Analysis
from harness.report.format import IMPRECISE_MARK, clip, count, cpu_cell, ins_per_request
from harness.report.soak import summary_line

# matrix.csv: (column, value of an ok cell, format). The numbers of a cell that is not ok stay empty.
Column = tuple[str, Callable[[CellStats], Any], str]
CSV_HEAD = ["framework", "server", "db", "inserts_per_request", "shape", "python", "knob", "status", "verified"]


CSV_NUMBERS: list[Column] = [
    ("server_cpu_us_per_insert", lambda c: c.median.server_cpu_us_per_insert, ".1f"),
    ("server_cpu_us_per_insert_min", lambda c: c.cpu_min, ".1f"),
    ("server_cpu_us_per_insert_max", lambda c: c.cpu_max, ".1f"),
    ("server_cpu_us_per_insert_ci_low", lambda c: c.ci_low, ".1f"),
    ("server_cpu_us_per_insert_ci_high", lambda c: c.ci_high, ".1f"),
    ("server_cpu_us_per_request", lambda c: c.median.server_cpu_us_per_request, ".1f"),
    ("pg_cpu_us_per_insert", lambda c: c.median.pg_cpu_us_per_insert, ".1f"),
    ("loadgen_cpu_us_per_request", lambda c: c.median.loadgen_cpu_us_per_request, ".1f"),
    ("statements_per_insert", lambda c: c.median.statements_per_insert, ".4f"),
    ("transactions_per_insert", lambda c: c.median.transactions_per_insert, ".4f"),
    ("rps", lambda c: c.median.rps, ".1f"),
    ("p50_ms", lambda c: c.median.p50_ms, ".3f"),
    ("p99_ms", lambda c: c.median.p99_ms, ".3f"),
    ("errors", lambda c: c.errors, "d"),
    ("inserts_per_core_s", lambda c: c.inserts_per_core_s, ".0f"),
    ("cores_for_10k", lambda c: c.cores_for_10k, ".3f"),
]


CSV_EXTRA: list[Column] = [
    ("spread", lambda c: c.spread, ".4f"),
    ("user_us_per_insert", lambda c: c.median.user_us_per_insert, ".1f"),
    ("system_us_per_insert", lambda c: c.median.system_us_per_insert, ".1f"),
    ("handler_cpu_us_per_request", lambda c: c.median.handler_cpu_us_per_request, ".1f"),
    ("repeats", lambda c: c.repeats, "d"),
    ("precision", lambda c: c.precision, ".4f"),
    ("steal_ticks", lambda c: (c.machine or {}).get("steal_ticks"), ".0f"),
    ("iowait_ticks", lambda c: (c.machine or {}).get("iowait_ticks"), ".0f"),
    ("server_rss_warm_mib", lambda c: c.median.server_rss_warm_mib, ".1f"),
    ("server_rss_end_mib", lambda c: c.median.server_rss_end_mib, ".1f"),
]


# Figures of a cell's callgrind window: present whether or not its CPU samples succeeded.
CSV_INSTRUCTIONS: list[Column] = [
    ("instructions_per_insert", lambda c: c.instructions.instructions_per_insert, ".0f"),
    ("instructions_per_request", lambda c: c.instructions.instructions_per_request, ".0f"),
    ("gc_instructions_per_insert", lambda c: c.instructions.gc_instructions_per_insert, ".0f"),
    ("instructions_rows_per_statement", lambda c: c.instructions.rows_per_statement, ".2f"),
]


# The statements of each kind per insert (``analysis.statements``: INSERTs into every table summed), after the rest.
CSV_STATEMENTS = [f"statements_{kind}_per_insert" for kind in statements.KINDS]


def _by_kind(analysis: Analysis, cell: CellStats) -> list[str]:
    """A cell's statements of each kind per insert (median of its samples, each kind alone: they sum to
    statements_per_insert where every sample ran the same statements), or empty where not recorded."""
    figures = statements.per_insert(s for s in analysis.run.samples if s.cell == cell.key) if cell.ok else None
    if figures is None:
        return [""] * len(CSV_STATEMENTS)
    return [f"{v:.4f}" for v in statements.columns(figures).values()]


def _soak_columns(analysis: Analysis, cell: CellStats) -> list[str]:
    """A soaked cell's memory slope and verdict (``CSV_SOAK``); empty for a cell not soaked."""
    found = next((r for r in analysis.soak if r.cell == cell.key), None)
    if found is None:
        return ["", ""]
    return ["" if found.slope is None else f"{found.slope.per_100k:.3f}", found.verdict]


CSV_SOAK = ["soak_rss_mib_per_100k_requests", "soak_verdict"]  # last, in a run that soaked a cell of its matrix


def csv_text(analysis: Analysis) -> str:
    """One row per cell, a user's app's included; its rows and statements per request, then its statements of each
    kind per insert, are the last columns (then, where the run soaked cells, ``CSV_SOAK``)."""
    cells, per_request = analysis.cells, analysis.per_request
    own_python = str(analysis.run.environment.get("python") or "")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEAD + [n for n, _, _ in CSV_NUMBERS] + ["reason"]
                    + [n for n, _, _ in CSV_EXTRA + CSV_INSTRUCTIONS] + ["rows_per_request", "statements_per_request"]
                    + CSV_STATEMENTS + (CSV_SOAK if analysis.soak else []))
    for c in cells:
        values = {name: "" if not c.ok or (v := get(c)) is None else format(v, spec)
                  for name, get, spec in CSV_NUMBERS + CSV_EXTRA}
        values |= {name: "" if c.instructions is None or (v := get(c)) is None else format(v, spec)
                   for name, get, spec in CSV_INSTRUCTIONS}
        writer.writerow([c.key.framework, c.key.server, c.key.db, c.key.inserts_per_request, c.key.shape,
                         c.key.python or own_python, c.key.knob, c.status,
                         "true" if c.verified else "false", *(values[n] for n, _, _ in CSV_NUMBERS),
                         " ".join((c.reason or "").split()),
                         *(values[n] for n, _, _ in CSV_EXTRA + CSV_INSTRUCTIONS),
                         *("" if v is None or not c.ok else f"{v:.4f}"
                           for v in per_request.get(c.key, (None, None))), *_by_kind(analysis, c),
                         *(_soak_columns(analysis, c) if analysis.soak else [])])
    return out.getvalue()


def terminal_table(analysis: Analysis) -> str:
    """A compact plain-text table for the end of a run."""
    cells = analysis.cells
    rows = [["framework", "server", "db", "ins/req", "status", "µs/insert [95% interval]", "req/s", "errors",
             "verified"]]
    for c in cells:
        figures = ["", "", "", ""]
        if c.ok:
            figures = [cpu_cell(c), count(c.median.rps),
                       count(c.errors), "yes" if c.verified else "NO"]
        rows.append([c.key.framework, c.key.server, c.key.db, ins_per_request(c), c.status, *figures])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    numeric = (3, 5, 6, 7)

    def line(row: list[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(v.rjust(w) if i in numeric else v.ljust(w) for i, (v, w) in enumerate(cells))

    lines = [line(r).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{c.status}: {c.key.label}: {clip(c.reason or '')}" for c in cells if not c.ok]
    notes += [f"not verified: {c.key.label}: {clip('; '.join(c.verify_errors))}" for c in cells
              if c.ok and not c.verified]
    if any(c.imprecise for c in cells):
        notes.append(f"{IMPRECISE_MARK} interval wider than the precision target (or too few samples)")
    notes += [summary_line(r) for r in analysis.soak]
    return "\n".join((lines if cells else []) + ([""] + notes if notes and cells else notes))
