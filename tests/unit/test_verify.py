"""Verification of a sample's rows against what the load generator sent and got back."""

from __future__ import annotations

from harness.measure.load import Ack, text_for
from harness.measure.verify import verify

PREFIX = "rtest-1"


def _acks(n: int, first_id: int = 100, status: int = 201) -> list[Ack]:
    return [Ack(seq=k, phase="m", status=status, latency_us=100, ids=(first_id + k,)) for k in range(n)]


def _rows(acks: list[Ack]) -> list[tuple[int, str]]:
    return [(a.ids[0], text_for(PREFIX, a.seq)) for a in acks]


def check(acks: list[Ack], rows: list[tuple[int, str]], **kw) -> list[str]:
    options = {"prefix": PREFIX, "bulk": False, "stores": True, "inserts_per_request": 1} | kw
    return verify(acks, rows, **options)


def test_every_row_as_sent_verifies() -> None:
    acks = _acks(50)
    assert check(acks, _rows(acks)) == []


def test_a_missing_row_is_reported() -> None:
    acks = _acks(5)
    errors = check(acks, _rows(acks)[:-1])
    assert any("4 rows inserted but 5 ids" in e for e in errors)
    assert any("returned ids with no row" in e and "104" in e for e in errors)


def test_a_row_with_the_wrong_text_is_reported() -> None:
    acks = _acks(3)
    rows = _rows(acks)
    rows[1] = (rows[1][0], "someone else's text")
    assert any("not what was sent" in e and "101" in e for e in check(acks, rows))


def test_a_row_nobody_acknowledged_is_reported() -> None:
    acks = _acks(3)
    rows = [*_rows(acks), (999, "stray")]
    assert any("no response acknowledged" in e and "999" in e for e in check(acks, rows))


def test_a_repeated_id_is_reported() -> None:
    acks = [Ack(0, "m", 201, 1, (7,)), Ack(1, "m", 201, 1, (7,))]
    assert any("id 7 returned twice" in e for e in check(acks, [(7, text_for(PREFIX, 0))]))


def test_failed_requests_are_not_expected_to_store() -> None:
    acks = [*_acks(2), Ack(2, "m", 500, 1, ())]
    assert check(acks, _rows(acks[:2])) == []


def test_bulk_rows_follow_their_request_order() -> None:
    acks = [Ack(0, "m", 201, 1, (10, 11, 12))]
    rows = [(10 + j, text_for(PREFIX, 0, j)) for j in range(3)]
    assert check(acks, rows, bulk=True, inserts_per_request=3) == []
    swapped = [(10, rows[1][1]), (11, rows[0][1]), rows[2]]
    assert check(acks, swapped, bulk=True, inserts_per_request=3)


def test_a_2xx_without_its_ids_is_reported() -> None:
    acks = [Ack(0, "m", 201, 1, ())]
    assert any("without 1 id" in e for e in check(acks, []))


def test_none_layer_must_store_nothing() -> None:
    acks = _acks(3)
    assert check(acks, [], stores=False) == []
    assert any("stored 1 rows" in e for e in check(acks, [(5, "x")], stores=False))
