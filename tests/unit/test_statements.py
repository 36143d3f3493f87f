"""harness.analysis.statements and harness.report.statements: statements by kind, from the query texts PostgreSQL
15 recorded in pg_stat_statements for each layer and pool (constants normalised to $1…), to the report's lines."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from harness.analysis import statements
from harness.analysis.statements import KINDS, by_kind, classify, columns
from harness.analysis.summary import analyse
from harness.measure.counters import DbSnapshot
from harness.model import Cell, Run, Sample
from harness.report import own, table
from harness.report import statements as report

DATA = Path(__file__).parents[1] / "data"

# (query text exactly as pg_stat_statements showed it, the kind): every text each layer of apps/_db ran.
REAL_TEXTS = [
    ("BEGIN", "begin"),
    ("COMMIT", "commit"),
    ("ROLLBACK", "rollback"),
    ("INSERT INTO simple_text (text) VALUES ($1) RETURNING id", "insert:simple_text"),  # asyncpg
    ("INSERT INTO simple_text (text)\nSELECT t FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n\n"
     "RETURNING id", "insert:simple_text"),  # asyncpg and coalesced, several rows
    ("INSERT INTO simple_text (text) VALUES ($1::VARCHAR) RETURNING simple_text.id", "insert:simple_text"),  # core
    ("INSERT INTO simple_text (text) SELECT p0::VARCHAR FROM (VALUES ($1::VARCHAR, $4), ($2::VARCHAR, $5), "
     "($3::VARCHAR, $6)) AS imp_sen(p0, sen_counter) ORDER BY sen_counter RETURNING simple_text.id, "
     "simple_text.id AS id__1", "insert:simple_text"),  # SQLAlchemy's insertmanyvalues
    ('INSERT INTO "simple_text" ("text") VALUES ($1) RETURNING "simple_text"."id"', "insert:simple_text"),  # Django
    ('INSERT INTO "simple_text" ("text") SELECT * FROM UNNEST(($1)::varchar[]) RETURNING "simple_text"."id"',
     "insert:simple_text"),
    ("INSERT INTO simple_text (text) VALUES ($1)", "insert:simple_text"),  # a literal, normalised
    ("WITH x AS (SELECT $1) INSERT INTO simple_text (text) SELECT $2 FROM x", "insert:simple_text"),
    # asyncpg's pool reset on release (asyncpg 0.32, Connection.get_reset_query): one execute, four entries
    ("SELECT pg_advisory_unlock_all()", "reset"),
    ("CLOSE ALL", "reset"),
    ("UNLISTEN *", "reset"),
    ("RESET ALL", "reset"),
    ("SELECT $1", "ping"),  # SELECT 1: Django's health check, psycopg, SQLAlchemy's start
    ("SELECT set_config($1, $2, $3)", "other"),  # Django on each connection from its pool
    ("select pg_catalog.version()", "other"),  # SQLAlchemy's first connect
    ("select current_schema()", "other"),
    ("show standard_conforming_strings", "other"),
    ("show transaction isolation level", "other"),
]


@pytest.mark.parametrize(("query", "kind"), REAL_TEXTS)
def test_the_texts_the_layers_ran_are_classified(query: str, kind: str) -> None:
    assert classify(query) == kind


@pytest.mark.parametrize(("query", "kind"), [
    ("BEGIN ISOLATION LEVEL READ COMMITTED", "begin"),
    ("begin;", "begin"),
    ("START TRANSACTION", "begin"),
    ("END", "commit"),
    ("ABORT", "rollback"),
    ("ROLLBACK TO SAVEPOINT sa_savepoint_1", "other"),
    ("SAVEPOINT sa_savepoint_1", "other"),
    ("/* app=orders */ INSERT INTO Orders (total) VALUES ($1)", "insert:orders"),
    ("-- traced\nINSERT INTO public.order_lines (order_id) VALUES ($1)", "insert:order_lines"),
    ('INSERT INTO "public"."Order Lines" VALUES ($1)', "insert:Order Lines"),
    ("INSERT INTO shop.orders (total) VALUES ($1)", "insert:shop.orders"),
    ("WITH ins AS (INSERT INTO orders (total) VALUES ($1) RETURNING id) SELECT id FROM ins", "insert:orders"),
    ("WITH o AS (INSERT INTO orders DEFAULT VALUES RETURNING id) INSERT INTO order_lines (order_id) "
     "SELECT id FROM o", "insert:order_lines"),
    ("WITH t AS (SELECT $1) SELECT * FROM t", "other"),
    ("SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;", "reset"),  # if kept as one entry
    ("DISCARD ALL", "reset"),
    ("SELECT 1", "ping"),
    ("SELECT $1 FROM orders", "other"),
    ("UPDATE orders SET total = $1 WHERE id = $2", "other"),
])
def test_other_forms(query: str, kind: str) -> None:
    assert classify(query) == kind


def test_by_kind_sums_to_the_calls_and_keeps_the_tables_apart() -> None:
    rows = [("BEGIN", 10), ("INSERT INTO orders (total) VALUES ($1)", 10), ("COMMIT", 10),
            ("INSERT INTO order_lines (order_id) VALUES ($1)", 30), ('INSERT INTO "orders" VALUES ($1)', 2),
            ("CLOSE ALL", 10), ("SELECT $1", 0), ("select pg_catalog.version()", 1)]
    counts = by_kind(rows)
    assert counts == {"begin": 10, "commit": 10, "insert:order_lines": 30, "insert:orders": 12, "reset": 10,
                      "other": 1}
    assert sum(counts.values()) == sum(n for _, n in rows)
    assert list(columns(counts)) == list(KINDS) and columns(counts)["insert"] == 42


def test_a_window_counts_each_text_once_and_its_kinds_sum_to_its_statements() -> None:
    before = DbSnapshot(max_id=5, next_xid=100, calls={"BEGIN": 7, "COMMIT": 7, "INSERT INTO simple_text (text) "
                                                       "VALUES ($1) RETURNING id": 7, "select pg_catalog.version()": 1})
    after = DbSnapshot(max_id=9, next_xid=104, calls={"BEGIN": 11, "COMMIT": 11, "INSERT INTO simple_text (text) "
                                                      "VALUES ($1) RETURNING id": 11, "select pg_catalog.version()": 1,
                                                      "RESET ALL": 4})
    delta = after - before
    assert (delta.statements, delta.transactions) == (after.statements - before.statements, 4) == (16, 4)
    assert delta.by_kind == {"begin": 4, "commit": 4, "insert:simple_text": 4, "reset": 4}
    assert sum(delta.by_kind.values()) == delta.statements
    without = DbSnapshot(max_id=5, next_xid=100, calls=None)
    assert (without - without).by_kind is None and (without - without).statements is None


def _sample(by_kind: dict[str, int] | None, requests: int = 100, **fields) -> Sample:
    return Sample(cell=Cell("fastapi", "uvicorn", "orm"), repeat=0, requests_ok=requests, inserts=requests,
                  statements=None if by_kind is None else sum(by_kind.values()), statements_by_kind=by_kind, **fields)


def test_per_request_is_the_median_of_each_key_over_the_good_cpu_samples() -> None:
    samples = [_sample({"begin": 100, "insert:simple_text": 100, "commit": 100}),
               _sample({"begin": 200, "insert:simple_text": 200, "commit": 200, "ping": 20}, requests=200),
               _sample({"begin": 300, "insert:simple_text": 300, "commit": 300, "ping": 90}, requests=300),
               _sample({"other": 5}, status="failed"), _sample({"other": 5}, kind="instructions")]
    assert statements.per_request(samples) == {"begin": 1, "commit": 1, "insert:simple_text": 1, "ping": 0.1}
    assert statements.per_request([_sample(None)]) is None  # an older run: nothing recorded by kind


def test_a_sample_reads_and_writes_its_statements_by_kind_and_older_samples_read_none() -> None:
    sample = _sample({"begin": 3, "insert:simple_text": 3, "commit": 3})
    assert Sample.from_dict(json.loads(json.dumps(sample.to_dict()))) == sample
    old = json.loads((DATA / "run_small.json").read_text())["samples"][0]
    assert "statements_by_kind" not in old and Sample.from_dict(old).statements_by_kind is None


# --- the report ---------------------------------------------------------------------------------------------------

SINGLE = {"begin": 1.0, "insert:simple_text": 1.0, "commit": 1.0}  # BEGIN, INSERT, COMMIT: the orm layer's request
RESET = {"insert:simple_text": 4.0, "begin": 1.0, "commit": 1.0, "reset": 4.0}


def test_explain_says_where_a_requests_statements_come_from() -> None:
    assert report.explain(SINGLE) == "1 INSERT into `simple_text`, BEGIN and COMMIT"
    assert report.explain(RESET) == "4 INSERTs into `simple_text`, BEGIN, COMMIT and 4 statements of the pool's reset"
    assert report.explain({"insert:simple_text": 0.0435}) == "0.043 INSERT into `simple_text`"
    assert report.explain({"insert:orders": 1.0, "insert:order_events": 2.0, "ping": 1.0, "other": 1.0}) == (
        "1 INSERT into `orders`, 2 INSERTs into `order_events`, 1 ping (`SELECT 1`) and 1 other statement")
    assert report.explain({}) == "none"


def test_findings_flag_a_pool_reset_and_a_transaction_around_one_insert() -> None:
    assert report.findings({"insert:simple_text": 1.0}) == []  # autocommit, no reset: nothing to try
    single = report.findings(SINGLE)
    assert len(single) == 1 and single[0].startswith("Each request wraps its one INSERT in BEGIN … COMMIT")
    reset = report.findings({"insert:simple_text": 1.0, "reset": 4.0})
    assert len(reset) == 1 and reset[0].startswith("4 statements per request are the pool's reset on release")
    assert len(report.findings({**SINGLE, "reset": 4.0})) == 2
    assert report.findings(RESET)[0].startswith("4 statements")  # four INSERTs in one transaction: not one INSERT
    pinged = report.findings({"begin": 2.0, "rollback": 1.0, "insert:simple_text": 1.0, "commit": 1.0, "ping": 1.0})
    assert [f.split(" ", 2)[:2] for f in pinged] == [["Each", "request"], ["1", "ping"], ["1", "ROLLBACK"]]


def _by_kind_run(tmp_path: Path) -> Run:
    """The small fixture run with every sample's statements by kind, as each layer runs them."""
    data = json.loads((DATA / "run_small.json").read_text())
    for s in data["samples"]:
        if s.get("statements") is None:
            continue
        n = s["statements"]
        s["statements_by_kind"] = ({"begin": n // 3, "commit": n // 3, "insert:simple_text": n // 3}
                                   if s["db"] in ("core", "orm") else {"insert:simple_text": n} if n else {})
    return Run.from_dict(data, tmp_path)


def test_the_section_shows_each_layer_and_says_where_the_most_come_from(tmp_path: Path) -> None:
    text = report.section(analyse(_by_kind_run(tmp_path)))
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == ("| layer | statements/request | BEGIN | COMMIT | ROLLBACK | INSERT | pool reset | ping | other "
                        "| cells |")
    assert "| `core` | **3.00** | 1.00 | 1.00 | — | 1.00 | — | — | — | 2 |" in lines
    assert "| `orm` | **3.00** | 1.00 | 1.00 | — | 1.00 | — | — | — | 4 |" in lines  # fastapi/granian failed a sample
    assert "| `coalesced` | **0.043** | — | — | — | 0.043 | — | — | — | 2 |" in lines  # cells of a layer alike
    assert not any(line.startswith("| `none`") for line in lines)  # no statement at all
    assert ("`core` and `orm` run the most statements per insert: 3 per request each, from 1 INSERT into "
            "`simple_text`, BEGIN and COMMIT.") in lines


def test_an_older_run_has_no_section_and_empty_csv_columns(tmp_path: Path) -> None:
    run = Run.from_dict(json.loads((DATA / "run_small.json").read_text()), tmp_path)
    assert report.section(analyse(run)) is None
    rows = list(csv.DictReader(io.StringIO(table.csv_text(analyse(run)))))
    assert all(row[name] == "" for row in rows for name in table.CSV_STATEMENTS)


def test_the_csv_columns_sum_to_the_statements_per_insert(tmp_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(table.csv_text(analyse(_by_kind_run(tmp_path))))))
    assert [f"statements_{k}_per_insert" for k in KINDS] == table.CSV_STATEMENTS
    assert list(rows[0])[-len(KINDS):] == table.CSV_STATEMENTS  # after every column there was before
    for row in rows:
        if row["status"] != "ok":
            assert all(row[name] == "" for name in table.CSV_STATEMENTS)
            continue
        parts = sum(float(row[name]) for name in table.CSV_STATEMENTS)
        assert parts == pytest.approx(float(row["statements_per_insert"]), abs=1e-3), row
        if row["db"] == "orm":
            assert [row[name] for name in table.CSV_STATEMENTS] == ["1.0000", "1.0000", "0.0000", "1.0000", "0.0000",
                                                                     "0.0000", "0.0000"]


def test_a_users_app_gets_its_statements_by_kind_per_server_and_what_to_try(tmp_path: Path) -> None:
    cell = Cell("orders", "uvicorn", "app")
    by_kind = {"begin": 100, "insert:orders": 100, "insert:order_events": 100, "commit": 100, "reset": 400}
    samples = [Sample(cell=cell, repeat=i, verified=True, requests=100, requests_ok=100, inserts=100, window_s=1.0,
                      server_cpu_user_s=0.1, server_cpu_system_s=0.01, statements=800, transactions=100,
                      statements_by_kind=by_kind, extra={"tables": {}}) for i in range(3)]
    run = Run(run_id="own", directory=tmp_path, options={"app": {"module": "orders"}}, cells=[cell], samples=samples)
    text = own.section(analyse(run))
    assert ("- uvicorn: 8 per request: 1 INSERT into `order_events`, 1 INSERT into `orders`, BEGIN, COMMIT and 4 "
            "statements of the pool's reset") in text
    assert "What they suggest trying:\n\n- 4 statements per request are the pool's reset on release" in text
    assert "Each request wraps its one INSERT" not in text  # two INSERTs per request


def test_a_knob_has_its_own_row_and_cells_that_differ_show_their_range(tmp_path: Path) -> None:
    def samples(cell: Cell, by_kind: dict[str, int]) -> list[Sample]:
        return [Sample(cell=cell, repeat=i, verified=True, requests=100, requests_ok=100, inserts=100, window_s=1.0,
                       server_cpu_user_s=0.1, server_cpu_system_s=0.01, statements=sum(by_kind.values()),
                       statements_by_kind=by_kind) for i in range(3)]

    plain, knob = Cell("asgi", "uvicorn", "asyncpg"), Cell("asgi", "uvicorn", "asyncpg", knob="pool4")
    other = Cell("fastapi", "uvicorn", "asyncpg")
    run = Run(run_id="knob", directory=tmp_path, options={}, cells=[plain, knob, other],
              samples=[*samples(plain, {"insert:simple_text": 100, "reset": 400}),
                       *samples(knob, {"insert:simple_text": 100}), *samples(other, {"insert:simple_text": 100})])
    lines = report.section(analyse(run)).splitlines()
    assert "| `asyncpg` | **3.00** (1.00–5.00) | — | — | — | 1.00 | 2.00 | — | — | 2 |" in lines
    assert "| `asyncpg` +pool4 | **1.00** | — | — | — | 1.00 | — | — | — | 1 |" in lines
    assert lines[-3].startswith("`asyncpg` runs the most statements per insert: 3 per request, from 1 INSERT")
