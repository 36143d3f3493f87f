"""What a window's statements were, by kind: BEGIN, COMMIT, ROLLBACK, INSERT (by table), a pool's reset or ping,
and the rest; read from ``pg_stat_statements``' query texts, as PostgreSQL normalises them (constants as $1…).

A sample records its window's calls by kind (``Sample.statements_by_kind``, e.g. ``{"begin": 4000, "commit": 4000,
"insert:simple_text": 4000}``), classified from the (query text, calls) rows the window added; the kinds sum to
its ``statements``. What each kind looks like in the texts:

- ``begin``, ``commit``, ``rollback``: BEGIN / START TRANSACTION, COMMIT / END, ROLLBACK / ABORT (a ROLLBACK TO
  a savepoint is ``other``). SQLAlchemy's ``pool_pre_ping`` over asyncpg shows here: BEGIN and ROLLBACK around an
  empty query (``;``), which PostgreSQL does not record;
- ``insert:<table>``: INSERT INTO <table>, or a WITH … INSERT INTO <table> (the table as PostgreSQL names it:
  unquoted names folded to lower case, ``public.`` left out);
- ``reset``: what a pool runs when a connection comes back: asyncpg's default reset on release,
  ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`` (asyncpg.Connection.get_reset_query),
  recorded as four statements, and DISCARD ALL;
- ``ping``: a ``SELECT 1`` that checks a connection (recorded as ``SELECT $1``: Django's health check,
  SQLAlchemy's pre-ping on drivers other than asyncpg). psycopg_pool's ``check`` sends an empty query: not recorded;
- ``other``: everything else (a driver's introspection, ``set_config``, …).

Pure functions: classifying texts, and each cell's median per request or per insert over its CPU samples.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable, Mapping
from typing import Any

KINDS = ("begin", "commit", "rollback", "insert", "reset", "ping", "other")  # the order every table shows
INSERT = "insert"  # a stored key is "insert:<table>"; every other kind is stored under its own name

_COMMENT = re.compile(r"^\s*(?:/\*.*?\*/|--[^\n]*(?:\n|$))", re.DOTALL)
_NAME = r'(?:"(?:[^"]|"")+"|[\w$]+)'
_TABLE = re.compile(rf"\bINSERT\s+INTO\s+(?:ONLY\s+)?({_NAME}(?:\s*\.\s*{_NAME})?)", re.IGNORECASE)
_KIND_PATTERNS = [(kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in (
    ("begin", r"(?:BEGIN|START\s+TRANSACTION)\b"),
    ("commit", r"(?:COMMIT|END)\b(?!\s+PREPARED)"),
    ("rollback", r"(?:ROLLBACK|ABORT)\b(?!\s+(?:(?:WORK|TRANSACTION)\s+)?TO\b)(?!\s+PREPARED)"),
    ("reset", r"(?:SELECT\s+pg_advisory_unlock_all\s*\(\s*\)|CLOSE\s+ALL|UNLISTEN\s+\*|RESET\s+ALL|DISCARD\s+ALL)"
              r"\s*(?:;|$)"),
    ("ping", r"SELECT\s+(?:1|\$1)\s*;?\s*$"),
)]


def _statement(query: str) -> str:
    """The text without the comments that lead it (a driver's or a tracer's ``/* … */``)."""
    while found := _COMMENT.match(query):
        query = query[found.end():]
    return query.strip()


def _top_level(text: str) -> str:
    """The text with every parenthesised part taken out (a CTE's body, a VALUES list): what is left is the
    statement's own clauses."""
    while (flat := re.sub(r"\([^()]*\)", " ", text)) != text:
        text = flat
    return text


def _table(name: str) -> str:
    parts = [p[1:-1].replace('""', '"') if p.startswith('"') else p.lower()
             for p in re.split(rf"\s*\.\s*(?={_NAME}$)", name.strip())]
    return ".".join(parts[1:] if len(parts) == 2 and parts[0] == "public" else parts)


def classify(query: str) -> str:
    """The kind of one statement from its text: "begin", "commit", "rollback", "insert:<table>", "reset", "ping"
    or "other"."""
    text = _statement(query)
    for kind, pattern in _KIND_PATTERNS:
        if pattern.match(text):
            return kind
    if re.match(r"(?:WITH|INSERT)\b", text, re.IGNORECASE):
        found = _TABLE.search(_top_level(text)) or _TABLE.search(text)  # the statement's own INSERT, else a CTE's
        if found:
            return f"{INSERT}:{_table(found.group(1))}"
    return "other"


def by_kind(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Calls by kind from (query text, calls) rows, kinds with none left out; the values sum to the calls."""
    counts: dict[str, int] = {}
    for query, calls in rows:
        if calls:
            kind = classify(query)
            counts[kind] = counts.get(kind, 0) + calls
    return {kind: n for kind, n in sorted(counts.items(), key=lambda kv: _order(kv[0])) if n}


def kind_of(key: str) -> str:
    """The column a stored key counts in: "insert:orders" → "insert"."""
    return key.split(":", 1)[0]


def table_of(key: str) -> str | None:
    """The table of an insert key ("insert:orders" → "orders"), None for any other kind."""
    kind, _, table = key.partition(":")
    return table if kind == INSERT and table else None


def _order(key: str) -> tuple[int, str]:
    kind = kind_of(key)
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), key)


def per_request(samples: Iterable[Any]) -> dict[str, float] | None:
    """Median statements per request by stored key over the good CPU samples that recorded them by kind; None
    when none did (an older run, no pg_stat_statements). A key a sample did not record counts 0 there."""
    return _medians(samples, lambda s: s.requests_ok)


def per_insert(samples: Iterable[Any]) -> dict[str, float] | None:
    """The same per row inserted (for a user's app, per request: its cells count "per insert" per request)."""
    return _medians(samples, lambda s: s.inserts)


def _medians(samples: Iterable[Any], denominator: Callable[[Any], int | None]) -> dict[str, float] | None:
    good = [s for s in samples if s.kind == "cpu" and s.ok and s.statements_by_kind is not None and denominator(s)]
    if not good:
        return None
    keys = sorted({k for s in good for k in s.statements_by_kind}, key=_order)
    return {k: statistics.median(s.statements_by_kind.get(k, 0) / denominator(s) for s in good) for k in keys}


def columns(figures: Mapping[str, float]) -> dict[str, float]:
    """Every kind of ``KINDS`` once, inserts into every table summed: the figures as matrix.csv's columns show them."""
    summed = dict.fromkeys(KINDS, 0.0)
    for key, value in figures.items():
        summed[kind_of(key) if kind_of(key) in summed else "other"] += value
    return summed


def inserts(figures: Mapping[str, float]) -> dict[str, float]:
    """INSERT statements by table."""
    return {table: v for k, v in figures.items() if (table := table_of(k)) is not None}
