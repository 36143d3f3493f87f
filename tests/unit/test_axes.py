"""harness.axes: every axis is one registry that the harness, the apps, the charts and the CSV derive from.

A throwaway third server and a layer more, registered for one test, are picked up with no other edit: the
server's command and the recorded packages (its --app-python check: tests/system/test_wings.py), the layer
order, a chart's colour, and the CSV and charts of a run that measured them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import axes
from harness.analysis.stats import layer_order
from harness.analysis.summary import analyse
from harness.measure import metadata, servers
from harness.measure.apps import discover
from harness.model import Cell, Run
from harness.report import charts, matrix

DATA = Path(__file__).resolve().parent.parent / "data"
THIRD = axes.Server("third", ("{python}", "-m", "third_server", "{module}:{attr}", "--port", "{port}"),
                    modules=("third_server", "uvloop"), packages=("third-server",))


@pytest.fixture
def third_server_and_sixth_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(axes.SERVERS, "third", THIRD)
    monkeypatch.setattr(axes, "LAYERS", (*axes.LAYERS, "sixth"))


def test_the_harness_and_the_apps_list_the_same_layers_in_the_same_order() -> None:
    from apps import _db

    assert tuple(_db.LAYERS) == axes.LAYERS
    for app in discover().values():
        assert set(app.db_layers) - set(app.own_layers) <= set(axes.LAYERS), app.name
        assert not set(app.own_layers) & set(axes.LAYERS), app.name


def test_the_layer_registry_is_read_without_importing_it(tmp_path: Path) -> None:
    source = tmp_path / "registry.py"
    source.write_text('import os\nLAYERS = {"a": "m:A", "b": "m:B"}\nDEFAULT = 1\n')
    assert axes.registered_layers(source) == ("a", "b")
    source.write_text("LAYERS = dict(a=1)\n")
    with pytest.raises(ValueError):
        axes.registered_layers(source)
    source.write_text("OTHER = {}\n")
    with pytest.raises(ValueError, match="no literal LAYERS"):
        axes.registered_layers(source)


@pytest.mark.usefixtures("third_server_and_sixth_layer")
def test_a_third_server_is_one_registry_entry() -> None:
    app = discover()["asgi"]
    assert servers.command("third", app, 8123, python="/py") == ["/py", "-m", "third_server", "apps.asgi.app:app",
                                                                 "--port", "8123"]
    assert "third-server" in metadata.core_packages()


@pytest.mark.usefixtures("third_server_and_sixth_layer")
def test_a_sixth_layer_takes_its_place_and_a_colour_of_its_own() -> None:
    keys = [Cell("a", "s", db) for db in ["sixth", "orm", "none", "unknown"]]
    assert layer_order(keys) == ["none", "orm", "sixth", "unknown"]
    colours = [charts.layer_colour(db) for db in axes.LAYERS]
    assert len(set(colours)) == len(colours) == len(axes.LAYERS)
    assert charts.layer_colour("sixth") == charts.PALETTE[len(axes.LAYERS) - 1]
    assert charts.layer_colour("unknown") not in colours[:-1]  # not a registered layer's


@pytest.mark.usefixtures("third_server_and_sixth_layer")
def test_a_run_on_the_third_server_and_sixth_layer_renders_its_csv_and_charts(tmp_path: Path) -> None:
    data = json.loads((DATA / "run_small.json").read_text())
    for record in [*data["cells"], *data["samples"]]:
        if record["framework"] == "asgi":  # asgi's cells move to the new server; its `core` cells to the new layer
            record["server"] = "third"
            record["db"] = "sixth" if record["db"] == "core" else record["db"]
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "run.json").write_text(json.dumps(data))
    analysis = analyse(Run.load(directory))
    written = matrix.render(analysis.run, analysis)
    csv_text = (directory / "matrix.csv").read_text()
    assert "asgi,third,sixth,1,one" in csv_text and "asgi,third,none" in csv_text
    text = (directory / "matrix.md").read_text()
    assert "**third**: server CPU" in text and "| framework | none | asyncpg | coalesced | orm | sixth |" in text
    assert {p.name for p in written} >= {"matrix.csv", "matrix.md", "cpu_per_insert.png", "attribution.png"}
    assert (directory / "cpu_per_insert.png").read_bytes().startswith(b"\x89PNG")


def test_every_knob_is_documented_with_its_code() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "knobs.md").read_text()
    for name in axes.KNOBS:
        assert f"| `{name}` |" in page, f"docs/knobs.md has no row for the knob {name}"
