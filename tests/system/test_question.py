"""What the default run plans on this machine (the interpreters it finds, each probed in a process of its own),
and the bare app's GET form under both servers on a real PostgreSQL."""

from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.measure import pythons as _pythons
from harness.measure.plan import QUESTION, plan, resolve_options
from harness.model import Cell
from tests.unit.test_question import args


def test_the_default_run_adds_the_questions_cells():
    from harness.measure.apps import discover

    apps = discover()
    options = resolve_options(args(), apps)
    assert options["question"] and options["pythons"][0]["label"] == ""
    cells = plan(options, apps)
    ten = {c for c in cells if c.inserts_per_request == QUESTION["inserts"]}
    assert ten == {Cell("seed", "uvicorn", "orm", 10, "each")}  # the ladders add the rest as they go
    assert not [c for c in cells if c.python]  # the ladder's cheapest cell, once known, under each other Python
    knobbed = {c.knob for c in cells if c.knob}
    assert {"autocommit", "transaction", "reset", "response", "model", "gcoff", "pre_ping", "pins2025",
            "pool4"} <= knobbed
    assert Cell("floor", "uvloop", "none") not in cells  # discover() alone has no floor: the session adds it
    assert len(cells) == len(set(cells))
    chosen = resolve_options(args(frameworks=["asgi"], servers=["uvicorn"], db=["none"], inserts=[1, 10],
                                  shapes=["each"]), apps)
    assert not chosen["question"] and len(chosen["pythons"]) == 1
    assert plan(chosen, apps) == [Cell("asgi", "uvicorn", "none"), Cell("asgi", "uvicorn", "none", 10, "each")]
    with pytest.raises(UsageError, match="unknown shape"):
        resolve_options(args(shapes=["sideways"]), apps)


def test_interpreters_are_found_resolved_and_refused_with_one_line():
    found = _pythons.discover()
    labels = [i.label for i in found]
    assert len(labels) == len(set(labels)) and "" not in labels
    assert all(tuple(int(p) for p in i.version.split(".")[:2]) >= (3, 11) for i in found)
    assert _pythons.resolve([_pythons.own().version])[0].label == ""  # the harness's own interpreter
    with pytest.raises(UsageError, match="no such interpreter found"):
        _pythons.resolve(["2.9"])
    with pytest.raises(UsageError, match="not a CPython"):
        _pythons.resolve(["/bin/true"])
    requirements = _pythons.server_requirements()
    assert any(r.startswith("uvicorn==") for r in requirements) and any(r.startswith("fastapi==") for r in requirements)
    assert not any(r.split("==")[0] in _pythons.HARNESS_ONLY for r in requirements)


@pytest.mark.slow
@pytest.mark.parametrize(("app", "server"), [("asgi", "uvicorn"), ("asgi", "granian"), ("rsgi", "granian-rsgi")])
def test_the_bare_apps_get_form_stores_the_query_text_and_refuses_bad_queries(database, app, server):
    import httpx

    from harness.measure.apps import discover
    from harness.measure.servers import serve

    with serve(discover()[app], server, db="asyncpg", dsn=database.dsn) as running, \
            httpx.Client(base_url=running.url, timeout=30) as http:
        answer = http.get("/items", params={"text": "get form ✓"})
        assert answer.status_code == 201, answer.text
        assert database.fetch("SELECT text FROM simple_text WHERE id = $1", answer.json()["id"]) == [("get form ✓",)]
        before = database.fetch("SELECT count(*) FROM simple_text")
        for query in ("", "?text=", "?text=a&text=b", "?text=%ff", "?text=" + "x" * 1001):
            refused = http.get("/items" + query)
            assert refused.status_code == 422 and "detail" in refused.json(), (query, refused.text)
        assert database.fetch("SELECT count(*) FROM simple_text") == before
