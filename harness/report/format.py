"""Numbers, cells and Markdown as the report writes them: the leaf every section, table and chart label uses.

It imports nothing else of insertbench (a cell is anything with the attributes it reads), so any section can use
it without importing the module that assembles the report.
"""

from __future__ import annotations

import re
from typing import Any

IMPRECISE_MARK, UNVERIFIED_MARK = "†", "‡"


def short(x: float | None) -> str:
    """About three significant figures: 752, 31.2, 4.56, 1,330."""
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def count(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def per_insert(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}" if x >= 1 or x == 0 else f"{x:.3f}"


def cores(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def about(x: float | None) -> str:
    """A rate to three significant figures: 1,330 or 32,100."""
    return "n/a" if x is None else f"{float(f'{x:.3g}'):,.0f}"


def clip(text: str, limit: int = 160) -> str:
    """Text (an error, a stderr tail) on one line, cut at `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def md_text(text: str, limit: int = 300) -> str:
    """Untrusted text as one line of Markdown that renders literally, even inside a table."""
    line = clip(text, limit)
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", line) + (" (full text in run.json)" if line.endswith("…") else "")


def table(header: list[str], rows: list[list[str]], align: str) -> str:
    rule = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(line) + " |" for line in [header, rule, *rows])


def interval(cell: Any) -> str:
    """`[lo–hi]`, the cell's confidence interval, or nothing when it has too few samples for one."""
    return f" [{short(cell.ci_low)}–{short(cell.ci_high)}]" if cell.ci else ""


def cpu_cell(cell: Any, group: str = "", with_interval: bool = True) -> str:
    """A cell's median µs per insert, its interval and marks, or its status when it has none."""
    if not cell.ok:
        return cell.status
    marks = (IMPRECISE_MARK if cell.imprecise else "") + ("" if cell.verified else UNVERIFIED_MARK)
    letters = f" ({group})" if group else ""
    return short(cell.us_per_insert) + (interval(cell) if with_interval else "") + marks + letters


def mega(x: float | None) -> str:
    """Instructions: 183k, 2.23M (a difference may be negative: −12.5k)."""
    if x is None:
        return "n/a"
    sign, x = ("−" if x < 0 else ""), abs(x)
    return sign + (f"{x / 1e6:.3g}M" if x >= 1e6 else f"{x / 1e3:.3g}k" if x >= 1e3 else f"{x:.0f}")


def us(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"


def us_interval(c: Any) -> str:
    return f" [{us(c.ci_low)}–{us(c.ci_high)}]" if c.ci else ""


def ins_per_request(c: Any) -> str:
    """inserts per request, with the shape where it is not the plain one, the interpreter where not the run's, and
    the knob where there is one."""
    text = str(c.key.inserts_per_request) + ("" if c.key.shape == "one" else f" {c.key.shape}")
    return text + (f" @{c.key.python}" if c.key.python else "") + (f" +{c.key.knob}" if c.key.knob else "")


def python_summary(build: dict | None) -> str | None:
    """`/path/python3.11 (configure: no --enable-optimizations, no --with-lto; libpython shared)`."""
    if not build:
        return None
    flags = [("" if build.get(key) else "no ") + flag
             for key, flag in (("configure_pgo", "--enable-optimizations"), ("configure_lto", "--with-lto"))]
    libpython = f"; libpython {build['libpython']}" if build.get("libpython") else ""
    return f"`{build.get('executable')}` (configure: {', '.join(flags)}{libpython})"
