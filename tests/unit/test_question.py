"""Planning the question without running anything: an app's shapes, the seed's GET form, the interpreter cells
after the first round; how old cells read; the run options the README lists and the load generator refuses."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from harness.measure.apps import load_app
from harness.measure.sample import _load_spec
from harness.model import Cell


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


def test_the_cheapest_storing_cell_after_the_first_round_is_added_under_every_other_interpreter(tmp_path):
    from harness.measure.apps import discover
    from harness.measure.plan import ladder_cells as planned
    from harness.model import Run, Sample

    apps = discover()

    def ladder_cells(run: Run) -> list[Cell]:
        return planned(run, apps)

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


ROOT = next(p for p in Path(__file__).resolve().parents if (p / "noxfile.py").is_file())  # wherever under tests/
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """The targets of a Markdown page's links and images that point into the repository (no URL, no anchor)."""
    targets = (m.group(1).split("#", 1)[0] for m in LINK.finditer(page.read_text(encoding="utf-8")))
    return [t for t in targets if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_readme_lists_every_option_of_a_run_and_names_no_file_outside_the_repository():
    """The README is the landing page: under 200 lines, every docs page one link away; docs/options.md holds
    the Options block with every option of a run; no page names a file outside the repository; every
    relative link lands on a file or folder that exists."""
    from harness.__main__ import parse

    readme, docs = ROOT / "README.md", sorted((ROOT / "docs").glob("*.md"))
    text = readme.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    block = (ROOT / "docs" / "options.md").read_text(encoding="utf-8").split("```")[1]
    parser_options = {"--" + dest.replace("_", "-") for dest in parse(["run"]).__dict__}
    assert sorted(o for o in parser_options if o not in block and o != "--command") == []
    assert "../" not in text
    for page in (readme, *docs):
        words = page.read_text(encoding="utf-8")
        assert not [w for w in ("../shared", "DESIGN.md", "/work/") if w in words], page.name
        for target in relative_links(page):
            assert not target.startswith("/"), (page.name, target)
            found = (page.parent / target).resolve()
            assert found.is_relative_to(ROOT) and found.exists(), (page.name, target)
    linked = {(ROOT / t).resolve() for t in relative_links(readme)}
    assert [d.name for d in docs if d.resolve() not in linked] == []


@pytest.mark.parametrize("argv", [["--duration", "1e300"], ["--warmup", "2e6"], ["--rate", "1e12"],
                                  ["--duration", "nan"]])
def test_numbers_the_load_generator_cannot_take_are_refused_in_one_line(argv, capsys):
    from harness.__main__ import parse

    with pytest.raises(SystemExit) as stopped:
        parse(["run", *argv])
    assert stopped.value.code == 2
    assert "error: argument --" in capsys.readouterr().err.strip().splitlines()[-1]
