"""Reading back what a test inserted: texts by id, and how many rows carry a test's own prefix."""

from __future__ import annotations


def texts_by_id(database, ids: list[int]) -> dict[int, str]:
    return dict(database.fetch("SELECT id, text FROM simple_text WHERE id = ANY($1::bigint[])", ids))


def rows_like(database, prefix: str) -> int:
    return database.fetch("SELECT count(*) FROM simple_text WHERE starts_with(text, $1)", prefix)[0][0]
