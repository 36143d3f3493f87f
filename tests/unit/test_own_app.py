"""Measuring a user's own app (``--app``), before anything starts: the request and its ``{n}``, the options, and
what a run records; each mistake refused in one line naming its option."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.errors import UsageError
from harness.measure.own import Request, _table_of, from_args, table_delta

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "orders"


def test_n_becomes_the_number_in_path_headers_and_body():
    request = Request.parse("post /orders/{n}?ref=r{n}", '{"ref": "x-{n}"}', ["Idempotency-Key: k{n}"])
    target, headers, body = request.render(42)
    assert (request.method, target, body) == ("POST", "/orders/42?ref=r42", b'{"ref": "x-42"}')
    assert headers == {"Idempotency-Key": "k42", "Content-Type": "application/json"}
    assert request.template() == (b"POST /orders/{n}?ref=r{n} HTTP/1.1\r\nIdempotency-Key: k{n}\r\n"
                                  b"Content-Type: application/json\r\n\r\n{\"ref\": \"x-{n}\"}")


def test_a_given_content_type_is_kept_and_a_body_file_is_read(tmp_path):
    (tmp_path / "b.xml").write_text("<n>{n}</n>")
    request = Request.parse("PUT /x", f"@{tmp_path / 'b.xml'}", ["content-type: application/xml"])
    assert request.headers == (("content-type", "application/xml"),) and request.body == "<n>{n}</n>"


@pytest.mark.parametrize("request_, body, headers, message", [
    ("/orders", None, [], "--request takes a method and a path"),
    ("POST orders", None, [], "--request takes a method and a path"),
    ("POST /orders", "@/nonexistent/order.json", [], "--body @/nonexistent/order.json: cannot read"),
    ("POST /orders", None, ["NoColon"], "--header takes"),
    ("POST /orders", "{}", ["Content-Length: 2"], "--header Content-Length: the load generator sets it"),
    ("POST /orders", "x" * 70_000, [], "the load generator sends at most 65,536"),
])
def test_a_bad_request_is_refused_naming_the_option(request_, body, headers, message):
    with pytest.raises(UsageError, match=message.replace("?", r"\?")):
        Request.parse(request_, body, headers)


def _args(**given: object) -> SimpleNamespace:
    base = {"app": "orders:app", "app_dir": str(EXAMPLE), "request": "POST /orders", "body": None, "header": None,
            "env": None, "setup_sql": None, "app_python": None, "requirements": None, "health": None}
    return SimpleNamespace(**(base | given))


@pytest.mark.parametrize("given, message", [
    ({"app": "orders"}, "--app takes MODULE:ATTR"),
    ({"app": "orders:not-a-name"}, "--app takes MODULE:ATTR"),
    ({"app_dir": "/nonexistent"}, "--app-dir /nonexistent: no such folder"),
    ({"env": ["DATABASE_URL"]}, "--env takes NAME=VALUE"),
    ({"app_python": "/nonexistent/python"}, "not an executable file"),
    ({"app_python": sys.executable, "requirements": "r.txt"}, "install into yours instead"),
    ({"health": "/health"}, "--health takes a method and a path"),
    ({"setup_sql": "@/nonexistent.sql"}, "--setup-sql @/nonexistent.sql: cannot read"),
])
def test_bad_app_options_are_refused_naming_the_option(given, message):
    with pytest.raises(UsageError, match=message):
        from_args(_args(**given))


def test_the_environment_fills_in_the_dsn_and_drops_the_harness_variables(monkeypatch):
    monkeypatch.setenv("BENCH_DSN", "postgresql://secret@h/d")
    own = from_args(_args(env=["DATABASE_URL={dsn_asyncpg}", "PLAIN={dsn}", "OTHER=1"]))
    env = own.environment("postgresql://u:p@127.0.0.1:5/db")
    assert env["DATABASE_URL"] == "postgresql+asyncpg://u:p@127.0.0.1:5/db"
    assert (env["PLAIN"], env["OTHER"], env["PYTHONPATH"]) == ("postgresql://u:p@127.0.0.1:5/db", "1", str(EXAMPLE))
    assert "BENCH_DSN" not in env and "BENCH_DB" not in env


def test_run_json_records_no_header_or_environment_values():
    own = from_args(_args(header=["Authorization: Bearer secret"], env=["TOKEN=secret"], body='{"a": 1}'))
    assert "secret" not in json.dumps(own.describe())


def test_table_delta_keeps_the_tables_written_in_the_window():
    before = {("orders", "inserted"): 10, ("quiet", "updated"): 5}
    after = {("orders", "inserted"): 30, ("orders", "deleted"): 1, ("quiet", "updated"): 5, ("new", "inserted"): 4}
    assert table_delta(before, after) == {"new": {"inserted": 4, "updated": 0, "deleted": 0},
                                          "orders": {"inserted": 20, "updated": 0, "deleted": 1}}


@pytest.mark.parametrize("query, found", [
    ("INSERT INTO orders (reference) VALUES ($1) RETURNING orders.id", ("orders", "inserted")),
    ('  update "Order" SET x = $1 WHERE id = $2', ("Order", "updated")),
    ("DELETE FROM shop.order_events WHERE id = $1", ("shop.order_events", "deleted")),
    ("UPDATE ONLY public.orders SET x = $1", ("orders", "updated")),
    ("SELECT * FROM orders FOR UPDATE", None),
    ("WITH x AS (INSERT INTO a VALUES ($1) RETURNING id) SELECT * FROM x", None),
    ("BEGIN", None),
])
def test_a_statement_is_attributed_to_the_table_it_writes(query, found):
    assert _table_of(query) == found


def test_your_app_ends_with_what_to_try_each_line_with_this_runs_figure(tmp_path):
    from dataclasses import asdict

    from harness.analysis.summary import analyse
    from harness.model import Cell, Run, Sample
    from harness.report.own import what_to_try

    def sample(cell: Cell, us: float, repeat: int, by_kind: dict | None = None) -> Sample:
        cpu = us * 1000 / 1e6
        return Sample.from_dict({**asdict(cell), "repeat": repeat, "status": "ok", "verified": True, "window_s": 1.0,
                                 "requests": 1000, "requests_ok": 1000, "errors": 0, "inserts": 1000,
                                 "server_cpu_user_s": cpu, "server_cpu_system_s": 0.0, "statements": 3000,
                                 "transactions": 1000, "statements_by_kind": by_kind})

    mine, freeze = Cell("orders", "uvicorn", "app"), Cell("orders", "uvicorn", "app", knob="gcfreeze")
    granian = Cell("orders", "granian", "app")
    core, auto = Cell("fastapi", "uvicorn", "core"), Cell("fastapi", "uvicorn", "core", knob="autocommit")
    kinds = {"begin": 1000, "commit": 1000, "insert:orders": 1000}
    figures = {mine: 1500, freeze: 1000, granian: 1600, core: 600, auto: 400}
    samples = [sample(c, us * (1 + r / 100), r, kinds if c.framework == "orders" else None)
               for c, us in figures.items() for r in range(3)]
    profiled = sample(mine, 1500, 0)
    profiled = Sample.from_dict({**profiled.to_dict(), "kind": "profile", "extra": {
        "profile_shares": {"python": 0.3, "sqlalchemy": 0.25, "asyncpg": 0.1},
        "profile_inclusive": {"sqlalchemy": 0.6, "fastapi": 0.9, "asyncpg": 0.2}}})
    run = Run(run_id="r", directory=tmp_path, options={"app": {"module": "orders"}}, cells=list(figures),
              samples=[*samples, profiled])
    text = what_to_try(analyse(run))
    assert ("(innermost frame, of user CPU): python 30%, sqlalchemy 25%, asyncpg 10%; the CPU that runs under each "
            "(its frames and all they call, of all the CPU): fastapi 90%, sqlalchemy 60%, asyncpg 20%.") in text
    assert "autocommit instead of BEGIN … COMMIT around one INSERT" in text
    assert "606 → 404 µs per insert (-202.0, 0.67×) at `fastapi/uvicorn/core`" in text  # the medians
    assert "`gcfreeze` on your app, no code change" in text and "1,515 → 1,010 µs per request" in text
    assert "uvicorn 1,515 µs per request against granian 1,616 (1.07×)." in text
