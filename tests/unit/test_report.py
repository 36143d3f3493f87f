"""harness.report: matrix.md / matrix.csv against golden files, failed cells, README markers, charts."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from harness.analysis.summary import analyse
from harness.model import Run
from harness.report import matrix, readme, table
from harness.report.readme import newest_run

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parents[1] / "data"
GOLDEN = DATA / "golden"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_dir(tmp_path: Path, data: dict | None = None, name: str = "20261125-0102-3f9c2ab") -> Path:
    """A results/<run-id> folder holding the small fixture run, or `data`."""
    directory = tmp_path / "results" / name
    directory.mkdir(parents=True)
    if data is None:
        shutil.copy(DATA / "run_small.json", directory / "run.json")
    else:
        (directory / "run.json").write_text(json.dumps(data))
    return directory


def render(directory: Path) -> list[Path]:
    """Every file of the run in ``directory``, rendered from its run.json alone."""
    return matrix.render(Run.load(directory))


def update_readme(path: Path, directory: Path) -> bool:
    return readme.update_readme(path, analyse(Run.load(directory)))


def terminal_table(data: dict) -> str:
    return table.terminal_table(analyse(Run.from_dict(data)))


def fixture() -> dict:
    return json.loads((DATA / "run_small.json").read_text())


def csv_rows(directory: Path) -> dict[str, dict[str, str]]:
    rows = csv.DictReader(io.StringIO((directory / "matrix.csv").read_text()))
    return {f"{r['framework']}/{r['server']}/{r['db']}": r for r in rows}


@pytest.mark.parametrize("name", ["matrix.md", "matrix.csv"])
def test_golden(tmp_path, name):
    """Set INSERTBENCH_UPDATE_GOLDEN=1 to rewrite tests/data/golden/ after an intended change."""
    directory = run_dir(tmp_path)
    render(directory)
    produced = (directory / name).read_bytes()
    if os.environ.get("INSERTBENCH_UPDATE_GOLDEN") == "1":
        (GOLDEN / name).write_bytes(produced)
    assert produced == (GOLDEN / name).read_bytes()


def test_render_writes_four_files_and_png_charts(tmp_path):
    directory = run_dir(tmp_path)
    paths = render(directory)
    assert [p.name for p in paths] == ["matrix.csv", "matrix.md", "cpu_per_insert.png", "attribution.png",
                                       "what_to_change.png"]
    for chart in paths[2:]:
        assert chart.stat().st_size > 10_000
        assert chart.read_bytes().startswith(PNG_MAGIC)
    md = (directory / "matrix.md").read_text()
    assert "](cpu_per_insert.png)" in md and "](attribution.png)" in md and "](what_to_change.png)" in md


def test_rendering_twice_is_identical(tmp_path):
    directory = run_dir(tmp_path)
    render(directory)
    first = {p.name: p.read_bytes() for p in directory.iterdir()}
    render(directory)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == first


def test_failed_cell_shows_its_reason_and_no_number(tmp_path):
    directory = run_dir(tmp_path)
    render(directory)
    md = (directory / "matrix.md").read_text()
    [row] = [line for line in md.splitlines() if line.startswith("| fastapi | granian | orm |")]
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[4].startswith("**failed**: server exited with code 1 during startup: ImportError")
    assert all(c == "" for c in cells[5:])
    assert "| **fastapi** | 110 [109–111] | 206 [204–208] | — | — | failed |" in md  # the granian grid
    assert "Not in the chart: `fastapi/granian/orm` (failed), `seed/granian/orm` (missing)." in md
    row = csv_rows(directory)["fastapi/granian/orm"]
    assert row["status"] == "failed" and row["verified"] == "false"
    assert row["reason"].startswith("server exited with code 1 during startup")
    numeric = [k for k in row if k not in ("framework", "server", "db", "inserts_per_request", "shape", "python",
                                           "status", "verified", "reason")]
    assert all(row[k] == "" for k in numeric)


def test_unverified_and_imprecise_cells_are_marked(tmp_path):
    data = fixture()
    data["options"]["precision"] = 4.0  # asgi/granian/core's interval is ±4.7%: wider than the target
    directory = run_dir(tmp_path, data)
    render(directory)
    md = (directory / "matrix.md").read_text()
    assert "| **asgi** | 22.3 [22.1–22.6] | 100 [99.5–102] | 31.2 [30.9–31.5] | 173 [171–188]† | 386 [382–391] |" in md
    assert "221 [219–224]‡" in md
    assert "† the interval is wider than the run's precision target" in md
    assert "- `fastapi/uvicorn/asyncpg`: repeat 2: 2 non-2xx responses (500)" in md
    rows = csv_rows(directory)
    assert rows["fastapi/uvicorn/asyncpg"]["verified"] == "false"
    assert float(rows["asgi/granian/core"]["spread"]) > 0.05


@pytest.mark.parametrize("strip", ["everything", "optional"])
def test_run_with_little_environment_renders(tmp_path, strip):
    data = fixture()
    if strip == "everything":
        data["environment"], data["options"] = {}, {}
    else:
        del data["environment"]["postgres"], data["environment"]["affinity"], data["environment"]["packages"]
        del data["options"]["rate"]
        for s in data["samples"]:
            for key in ("pg_cpu_s", "statements", "transactions", "handler_cpu_ms_mean", "latency_ms"):
                s.pop(key, None)
    directory = run_dir(tmp_path, data)
    render(directory)
    md = (directory / "matrix.md").read_text()
    assert "## Environment and method" in md
    assert "**Server CPU per insert** = Δ(user + system CPU)" in md
    assert "752 µs" in md


def test_answer_without_seed_uses_fastapi_orm(tmp_path):
    data = fixture()
    data["cells"] = [c for c in data["cells"] if c["framework"] != "seed"]
    data["samples"] = [s for s in data["samples"] if s["framework"] != "seed"]
    directory = run_dir(tmp_path, data)
    render(directory)
    md = (directory / "matrix.md").read_text()
    assert "The original app (seed) is not in this run, so FastAPI + ORM stands in for it: it costs" in md
    assert "**560 µs**" in md and "(`fastapi/uvicorn/orm`)" in md
    assert "No seed cell in this run reported its in-handler figure." in md


README = """# insertbench

Intro.

<!-- results:start -->
old results
<!-- results:end -->

## Running
Keep this.
"""


def test_update_readme_replaces_only_between_markers(tmp_path):
    directory = run_dir(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert update_readme(readme, directory) is True
    text = readme.read_text()
    assert text.startswith("# insertbench\n\nIntro.\n\n<!-- results:start -->\n**Is 1–2 ms of CPU per insert")
    assert "### What to change" in text and "(results/20261125-0102-3f9c2ab/what_to_change.png)" in text
    assert text.endswith("<!-- results:end -->\n\n## Running\nKeep this.\n")
    assert "old results" not in text
    assert "(results/20261125-0102-3f9c2ab/matrix.md)" in text
    assert "**uvicorn**: server CPU µs per insert" in text and "**granian**" in text
    assert update_readme(readme, directory) is False  # already up to date
    assert readme.read_text() == text


def test_update_readme_without_markers_says_what_to_add(tmp_path):
    directory = run_dir(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# insertbench\n\nNo markers here.\n")
    with pytest.raises(ValueError, match="add a line <!-- results:start -->"):
        update_readme(readme, directory)
    assert readme.read_text() == "# insertbench\n\nNo markers here.\n"


def test_newest_run(tmp_path):
    results = tmp_path / "results"
    with pytest.raises(FileNotFoundError, match="run the benchmark first"):
        newest_run(results)
    for name in ["20261124-235959-aaaaaaa", "20261125-010203-bbbbbbb", "20261125-000000-ccccccc"]:
        run_dir(tmp_path, name=name)
    (results / "20261231-notarun").mkdir()
    assert newest_run(results).name == "20261125-010203-bbbbbbb"


def test_terminal_table():
    data = fixture()
    text = terminal_table(data)
    lines = text.splitlines()
    assert lines[0].split() == ["framework", "server", "db", "ins/req", "status", "µs/insert", "[95%",
                                "interval]", "req/s", "errors", "verified"]
    assert len([line for line in lines if line.startswith(("asgi", "fastapi", "seed"))]) == 18
    assert any(line.split()[:6] == ["seed", "uvicorn", "orm", "1", "ok", "752"] for line in lines)
    assert any(line.split() == ["fastapi", "granian", "orm", "1", "failed"] for line in lines)
    assert "failed: fastapi/granian/orm: server exited with code 1" in text
    assert "not verified: fastapi/uvicorn/asyncpg: repeat 2: 2 non-2xx responses (500)" in text


def test_cells_a_row_cannot_tell_apart_share_a_letter(tmp_path):
    data = fixture()
    # asgi/uvicorn/coalesced moved onto asgi/uvicorn/none's interval
    for s in data["samples"]:
        if (s["framework"], s["server"]) == ("asgi", "uvicorn") and s["db"] == "coalesced":
            s["server_cpu_user_s"] *= 24.0 / 33.5
            s["server_cpu_system_s"] *= 24.0 / 33.5
    directory = run_dir(tmp_path, data)
    render(directory)
    [row] = [line for line in (directory / "matrix.md").read_text().splitlines()
             if line.startswith("| **asgi** | 24.0")]
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[1].endswith("(a)") and cells[3].endswith("(a)")  # none and coalesced: indistinguishable
    assert not cells[2].endswith(")") and not cells[5].endswith(")")


def test_environment_names_how_python_was_built(tmp_path):
    data = fixture()
    data["environment"]["python_build"] = {
        "executable": "/opt/py/bin/python3.11", "configure": "'--enable-shared'", "configure_pgo": False,
        "configure_lto": True, "libpython": "shared"}
    directory = run_dir(tmp_path, data)
    render(directory)
    md = (directory / "matrix.md").read_text()
    assert ("`/opt/py/bin/python3.11` (configure: no --enable-optimizations, --with-lto; libpython shared)"
            in md)


def profiled(data: dict) -> dict:
    """The fixture with a profiled window for two cells, and one whose profiler could not attach."""
    seed = {"sqlalchemy": 0.4, "python": 0.3, "fastapi": 0.2, "asyncpg": 0.1}
    for framework, db, shares in [("seed", "orm", seed),
                                  ("asgi", "none", {"uvicorn": 0.5, "httptools": 0.3, "asyncio": 0.2})]:
        base = next(s for s in data["samples"]
                    if (s["framework"], s["server"], s["db"]) == (framework, "uvicorn", db))
        flame = f"profiles/{framework}-uvicorn-{db}-1.speedscope.json"
        data["samples"].append(base | {"kind": "profile", "repeat": 0,
                                       "server_cpu_user_s": base["server_cpu_user_s"] * 1.1,
                                       "extra": {"profile_shares": shares, "profile_samples": 400,
                                                 "profile_flamegraph": flame}})
    failed = next(s for s in data["samples"]
                  if (s["framework"], s["server"], s["db"]) == ("asgi", "granian", "none"))
    error = "py-spy may not attach to the server (ptrace is not permitted here): add --cap-add SYS_PTRACE"
    data["samples"].append(failed | {"kind": "profile", "repeat": 0, "extra": {"profile_error": error}})
    return data


def test_profiled_cells_get_profile_csv_a_chart_and_where_the_cpu_goes(tmp_path):
    directory = run_dir(tmp_path, profiled(fixture()))
    paths = render(directory)
    assert [p.name for p in paths][-2:] == ["profile.csv", "profile.png"]
    assert (directory / "profile.png").read_bytes().startswith(PNG_MAGIC)
    rows = list(csv.DictReader(io.StringIO((directory / "profile.csv").read_text())))
    assert list(rows[0]) == ["framework", "server", "db", "inserts_per_request", "package", "share", "us_per_insert",
                             "inclusive_share", "inclusive_us_per_insert"]
    cpu = {label: float(r["server_cpu_us_per_insert"]) for label, r in csv_rows(directory).items()
           if r["status"] == "ok"}
    for label in ("seed/uvicorn/orm", "asgi/uvicorn/none"):
        mine = [r for r in rows if f"{r['framework']}/{r['server']}/{r['db']}" == label]
        assert sum(float(r["share"]) for r in mine) == pytest.approx(1, abs=1e-3)
        assert sum(float(r["us_per_insert"]) for r in mine) == pytest.approx(cpu[label], rel=2e-3)
        assert "kernel" in {r["package"] for r in mine}
    md = (directory / "matrix.md").read_text()
    assert "## Where the CPU goes\n" in md and "![CPU by package](profile.png)" in md
    assert "The original app (`seed/uvicorn/orm`" in md and "sqlalchemy" in md
    assert "with py-spy attached, a cell's CPU per insert was 1.09× its median without it (median over 2 cells" in md
    assert "- `asgi/granian/none`: py-spy may not attach to the server (ptrace is not permitted here)" in md
    first = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    render(directory)  # re-rendered from the folder alone: the same bytes
    assert {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()} == first


def test_report_shows_the_newest_full_run_in_the_readme_and_leaves_it_to_that_run(tmp_path, monkeypatch, capsys):
    """`nox -s report` re-renders any run, but the README's results section shows the newest full run (or the run
    given with --readme): re-rendering another leaves it alone. In tmp_path: a README and a results/ beside it."""
    from harness.__main__ import main
    from harness.measure import session

    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    monkeypatch.setattr(session, "ROOT", tmp_path)
    results = tmp_path / "results"
    def run(name: str, default: bool) -> Path:
        data = fixture() | {"run_id": name}
        data["options"]["question"] = default  # what a default run records; the fixture's 17 cells otherwise
        return run_dir(tmp_path, data, name=name)

    partial, older, newer = run("19700101-000000-partial", False), run("19700101-000001-full", True), \
        run("19700101-000002-full", True)
    before = readme.read_bytes()
    assert main(["report", partial.name, "--results", str(results)]) == 0
    assert "left as it is: it shows full runs only" in capsys.readouterr().out and readme.read_bytes() == before
    assert main(["report", older.name, "--results", str(results)]) == 0
    assert "it shows the newest full run" in capsys.readouterr().out and readme.read_bytes() == before
    assert main(["report", newer.name, "--results", str(results)]) == 0
    assert "refreshed" in capsys.readouterr().out and f"run {newer.name}" in readme.read_text()
    shown = readme.read_bytes()
    assert main(["report", newer.name, "--results", str(results)]) == 0  # again: the same bytes
    assert "shows this run" in capsys.readouterr().out and readme.read_bytes() == shown
    assert main(["report", partial.name, "--results", str(results), "--readme"]) == 0
    assert f"run {partial.name}" in readme.read_text()
    assert main(["report", newer.name, "--results", str(results), "--no-readme"]) == 0
    assert f"run {partial.name}" in readme.read_text()  # --no-readme: left as it is
    assert (ROOT / "README.md").read_bytes() != readme.read_bytes()  # the checkout's own README was not touched
    assert main(["report", str(results / newer.name), "--no-readme"]) == 0  # a run's path works as its id does
    assert f"wrote {results / newer.name}" in capsys.readouterr().out
    assert main(["report", "nope", "--results", str(results)]) != 0
    assert f"nope; runs there: {partial.name}, {older.name}, {newer.name}\n" in capsys.readouterr().err
