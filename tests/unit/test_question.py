"""What the default run plans to answer the question: shapes, the GET form, interpreters; how cells read and load."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness import _pythons
from harness._apps import load_app
from harness._bench import Cell
from harness._errors import UsageError
from harness._runner import QUESTION, plan, resolve_options
from harness._sample import _load_spec


def write_app(root: Path, name: str, source: str):
    folder = root / "apps" / name
    folder.mkdir(parents=True)
    (folder / "app.py").write_text(source)
    return load_app(folder, "apps")


def test_an_app_declares_its_shapes(tmp_path):
    post = write_app(tmp_path, "post", "app = None\n")
    assert post.endpoints == {"one": ("POST", "/items"), "bulk": ("POST", "/items/bulk"),
                              "each": ("POST", "/items/each")}
    assert post.supports("orm", 10, "each") and post.supports("orm", 1) and not post.supports("orm", 1, "each")
    get = write_app(tmp_path, "get", 'ENDPOINT = "GET /t"\nEACH_ENDPOINT = "GET /t-many"\nDB_LAYERS = ("orm",)\n')
    assert get.endpoints == {"one": ("GET", "/t"), "each": ("GET", "/t-many")}
    assert get.supports("orm", 10, "each") and not get.supports("orm", 10, "bulk") and not get.supports("core")
    bare = write_app(tmp_path, "bare", 'GET_ENDPOINT = "GET /items"\n')
    assert bare.supports("none", 1, "get") and not bare.supports("none", 10, "get")


def test_old_cells_read_as_one_or_bulk_and_labels_name_shape_and_python():
    assert Cell.from_dict({"framework": "f", "server": "s", "db": "d", "inserts_per_request": 10}).shape == "bulk"
    assert Cell.from_dict({"framework": "f", "server": "s", "db": "d"}) == Cell("f", "s", "d", 1, "one", "")
    assert Cell("f", "s", "d", 10, "each", "3.13.0").label == "f/s/d ×10 each @3.13.0"
    assert Cell("asgi", "granian", "none", 1, "get").label == "asgi/granian/none GET"


def test_the_seed_writes_several_rows_through_its_get_form(tmp_path):
    seed = write_app(tmp_path, "seed", 'ENDPOINT = "GET /test-insert"\nEACH_ENDPOINT = "GET /test-insert-many"\n')
    options = {"concurrency": 64, "warmup": 1.0, "duration": 2.0, "rate": None, "instruction_concurrency": 4,
               "instruction_warmup": 4.0, "instruction_requests": 100}
    spec = _load_spec(seed, Cell("seed", "uvicorn", "orm", 10, "each"), 8000, options, "p", "cpu")
    assert (spec.method, spec.path, spec.body, spec.inserts) == ("GET", "/test-insert-many?n=10", "query", 10)
    post = write_app(tmp_path, "post", "app = None\n")
    spec = _load_spec(post, Cell("post", "uvicorn", "orm", 10, "each"), 8000, options, "p", "cpu")
    assert (spec.method, spec.path, spec.body) == ("POST", "/items/each", "texts")


def args(**given) -> argparse.Namespace:
    names = ("frameworks", "servers", "db", "inserts", "shapes", "python", "repeats", "duration", "warmup",
             "concurrency", "workers", "rate", "precision", "budget", "instruction_requests",
             "instruction_concurrency", "dsn")
    flags = {"quick": False, "durable": False, "instructions": False, "profile": False}
    return argparse.Namespace(**({n: None for n in names} | flags | given))


def test_the_default_run_adds_the_questions_cells():
    from harness._apps import discover

    apps = discover()
    options = resolve_options(args(), apps)
    assert options["question"] and options["pythons"][0]["label"] == ""
    cells = plan(options, apps)
    ten = {c for c in cells if c.inserts_per_request == QUESTION["inserts"]}
    assert Cell("seed", "uvicorn", "orm", 10, "each") in ten and Cell("fastapi", "uvicorn", "core", 10, "bulk") in ten
    assert {c.shape for c in ten} == {"bulk", "each"} and {c.server for c in ten} == {"uvicorn"}
    others = [p["label"] for p in options["pythons"][1:]]
    assert [c for c in cells if c.python] == [Cell("seed", "uvicorn", "orm", 1, "one", label) for label in others]
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


def test_the_cheapest_storing_cell_after_the_first_round_is_added_under_every_other_interpreter(tmp_path):
    from harness._bench import Run, Sample
    from harness._runner import ladder_cells

    def sample(cell: Cell, us: float, ok: bool = True) -> Sample:
        return Sample(cell=cell, repeat=0, status="ok" if ok else "failed", verified=ok, window_s=1.0, requests=100,
                      requests_ok=100, errors=0, inserts=100, server_cpu_user_s=us * 100 / 1e6, server_cpu_system_s=0.0)

    cheap, dear = Cell("asgi", "uvicorn", "coalesced"), Cell("fastapi", "uvicorn", "orm")
    bare = Cell("asgi", "uvicorn", "none")
    options = {"question": True, "pythons": [{"label": ""}, {"label": "3.12.1"}, {"label": "3.13.0"}]}
    run = Run(run_id="r", directory=tmp_path, options=options, cells=[cheap, dear, bare],
              samples=[sample(cheap, 40), sample(dear, 900), sample(bare, 20)])
    assert ladder_cells(run) == [cheap.but(python="3.12.1"), cheap.but(python="3.13.0")]  # `none` stores nothing
    run.cells += ladder_cells(run)
    assert ladder_cells(run) == []  # added once
    run.samples[0] = sample(cheap, 40, ok=False)
    assert Cell("fastapi", "uvicorn", "orm", python="3.12.1") in ladder_cells(Run(
        run_id="r", directory=tmp_path, options=options, cells=[cheap, dear], samples=run.samples))
    assert ladder_cells(Run(run_id="r", directory=tmp_path, options=options | {"question": False}, cells=[cheap],
                            samples=run.samples)) == []


def test_the_readme_lists_every_option_of_a_run_and_names_no_file_outside_the_repository():
    from harness.__main__ import parse

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Options", 1)[1].split("```")[1]
    parser_options = set()
    for action in parse(["run"]).__dict__:
        parser_options.add("--" + action.replace("_", "-"))
    missing = sorted(o for o in parser_options if o not in block and o not in ("--command",))
    assert missing == []
    assert "../" not in readme and "DESIGN.md" not in readme


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_the_bare_apps_get_form_stores_the_query_text_and_refuses_bad_queries(database, server):
    import httpx

    from harness._apps import discover
    from harness._servers import serve

    with serve(discover()["asgi"], server, db="asyncpg", dsn=database.dsn) as running, \
            httpx.Client(base_url=running.url, timeout=30) as http:
        answer = http.get("/items", params={"text": "get form ✓"})
        assert answer.status_code == 201, answer.text
        assert database.fetch("SELECT text FROM simple_text WHERE id = $1", answer.json()["id"]) == [("get form ✓",)]
        before = database.fetch("SELECT count(*) FROM simple_text")
        for query in ("", "?text=", "?text=a&text=b", "?text=%ff", "?text=" + "x" * 1001):
            refused = http.get("/items" + query)
            assert refused.status_code == 422 and "detail" in refused.json(), (query, refused.text)
        assert database.fetch("SELECT count(*) FROM simple_text") == before


@pytest.mark.parametrize("argv", [["--duration", "1e300"], ["--warmup", "2e6"], ["--rate", "1e12"],
                                  ["--duration", "nan"]])
def test_numbers_the_load_generator_cannot_take_are_refused_in_one_line(argv, capsys):
    from harness.__main__ import parse

    with pytest.raises(SystemExit) as stopped:
        parse(["run", *argv])
    assert stopped.value.code == 2
    assert "error: argument --" in capsys.readouterr().err.strip().splitlines()[-1]
