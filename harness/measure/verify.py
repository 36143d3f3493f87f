"""Verification: every id a server acknowledged is a row holding the text that request sent, and
nothing else was stored.

The load generator sends distinct, reproducible texts (``text_for(prefix, seq, j)``) and records the
ids each 2xx response returned. Checked here: rows inserted = ids returned with a 2xx; ids unique; each
returned id's row holds its request's text; no row that no response acknowledged. For the ``none``
layer nothing may be stored at all.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.measure.load import Ack, text_for

MAX_REPORTED = 5


def _expected(acks: Iterable[Ack], prefix: str, bulk: bool) -> dict[int, str]:
    """id → the text its request sent, over every 2xx ack; raises ValueError on a repeated id."""
    expected: dict[int, str] = {}
    for ack in acks:
        if not 200 <= ack.status < 300:
            continue
        for j, row_id in enumerate(ack.ids):
            if row_id in expected:
                raise ValueError(f"id {row_id} returned twice (request {ack.seq})")
            expected[row_id] = text_for(prefix, ack.seq, j if bulk else None)
    return expected


def verify(acks: list[Ack], rows: list[tuple[int, str]], *, prefix: str, bulk: bool, stores: bool,
           inserts_per_request: int) -> list[str]:
    """What is wrong with this sample's rows, or ``[]`` when every row checks out."""
    errors: list[str] = []
    short = [a.seq for a in acks if 200 <= a.status < 300 and len(a.ids) != inserts_per_request]
    if short:
        errors.append(f"{len(short)} 2xx responses without {inserts_per_request} id(s), e.g. request {short[0]}")
    try:
        expected = _expected(acks, prefix, bulk)
    except ValueError as exc:
        return [*errors, str(exc)]
    if not stores:
        return errors + ([f"layer 'none' stored {len(rows)} rows"] if rows else [])
    stored = dict(rows)
    missing = [i for i in expected if i not in stored]
    wrong = [i for i in expected if i in stored and stored[i] != expected[i]]
    extra = [i for i in stored if i not in expected]
    if len(rows) != len(expected):
        errors.append(f"{len(rows)} rows inserted but {len(expected)} ids returned with a 2xx")
    for label, ids in (("returned ids with no row", missing), ("rows whose text is not what was sent", wrong),
                       ("rows no response acknowledged", extra)):
        if ids:
            errors.append(f"{len(ids)} {label}, e.g. id {', '.join(map(str, ids[:MAX_REPORTED]))}")
    return errors
