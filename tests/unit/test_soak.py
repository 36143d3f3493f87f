"""The soak: its windows read back (memory slope, verdict, CPU drift), rendered, and its options checked."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from harness.analysis import soak
from harness.analysis.summary import analyse
from harness.errors import UsageError
from harness.measure import soak as measure_soak
from harness.measure.apps import discover
from harness.model import Cell, Run, Sample
from harness.report import matrix

DATA = Path(__file__).parents[1] / "data"
CELL = Cell("asgi", "uvicorn", "asyncpg")
PER_WINDOW = 5_000  # requests


def windows(rss: list[float], cpu_us: list[float] | None = None, cell: Cell = CELL) -> list[Sample]:
    """A made-up soak: one window per RSS value (MiB at its end), PER_WINDOW requests each."""
    cpu_us = cpu_us or [100.0] * len(rss)
    return [Sample(cell=cell, repeat=i, kind="soak", status="ok", verified=True, window_s=2.0, requests=PER_WINDOW,
                   requests_ok=PER_WINDOW, errors=0, inserts=PER_WINDOW, server_cpu_user_s=us * PER_WINDOW / 1e6,
                   server_cpu_system_s=0.0, latency_ms={"p50": 1.0, "p99": 4.0},
                   server_rss_warm_mib=rss[i - 1] if i else rss[0], server_rss_end_mib=value,
                   extra={"soak_elapsed_s": 2.2 * (i + 1)})
            for i, (value, us) in enumerate(zip(rss, cpu_us, strict=True))]


def growing(per_100k: float, n: int = 20, start: float = 80.0) -> list[float]:
    return [start + per_100k * (i + 1) * PER_WINDOW / 100_000 for i in range(n)]


def test_a_flat_series_is_steady_with_a_zero_slope() -> None:
    result = soak.soak_result(CELL, windows([90.0] * 20), planned=20)
    assert result.slope == soak.Slope(0.0, 0.0, 0.0)
    assert result.verdict == soak.STEADY and not result.leaking
    assert result.complete and result.verified and result.errors == 0


def test_a_growing_series_is_leaking_with_its_slope_per_100k_requests() -> None:
    result = soak.soak_result(CELL, windows(growing(2.0)))
    assert result.slope.per_100k == pytest.approx(2.0)
    assert result.slope.low > soak.LEAK_MIB_PER_100K and result.leaking


def test_a_noisy_flat_series_is_not_leaking_and_its_interval_holds_zero() -> None:
    noise = np.random.default_rng(7).normal(0, 0.4, 30)
    result = soak.soak_result(CELL, windows(list(100 + noise)))
    assert result.slope.low < 0 < result.slope.high
    assert result.verdict != soak.LEAKING


def test_growth_just_under_the_threshold_is_not_leaking() -> None:
    assert soak.soak_result(CELL, windows(growing(0.5))).verdict == soak.STEADY
    assert soak.verdict(soak.Slope(1.5, 0.8, 2.2)) == soak.UNCLEAR  # the interval holds the threshold


def test_the_warm_up_fifth_is_left_out_of_the_slope() -> None:
    rss = [40.0, 60.0, 75.0, 85.0, 89.0] + [90.0] * 15  # grows while warming up (a fifth and a bit), then flat
    result = soak.soak_result(CELL, windows(rss))
    assert result.slope.per_100k == 0.0 and result.verdict == soak.STEADY
    kept = soak.rss_slope([PER_WINDOW * (i + 1) for i in range(20)], rss)  # with the warm-up kept
    assert kept.high > soak.LEAK_MIB_PER_100K and soak.verdict(kept) == soak.UNCLEAR


def test_one_odd_window_does_not_move_the_robust_slope() -> None:
    rss = growing(2.0)
    rss[12] += 50  # a burst of memory in one window
    assert soak.soak_result(CELL, windows(rss)).slope.per_100k == pytest.approx(2.0)


def test_cpu_drift_is_the_last_fifth_over_the_first_with_an_interval() -> None:
    cpu = [100.0, 101.0, 99.0, 100.0] + [110.0] * 12 + [119.0, 120.0, 121.0, 120.0]
    result = soak.soak_result(CELL, windows([90.0] * 20, cpu))
    assert result.drift.ratio == pytest.approx(1.2)
    assert 1 < result.drift.low <= 1.2 <= result.drift.high
    assert result.first.server_cpu_us_per_insert == pytest.approx(100.0)
    assert result.last.server_cpu_us_per_insert == pytest.approx(120.0)
    flat = soak.soak_result(CELL, windows([90.0] * 20))
    assert flat.drift.ratio == 1.0 and flat.drift.low <= 1.0 <= flat.drift.high


def test_too_few_windows_give_no_verdict_and_a_cut_soak_says_so() -> None:
    cut = soak.soak_result(CELL, windows([90.0, 91.0, 92.0]), planned=30)
    assert cut.verdict == soak.TOO_FEW and cut.slope is None and not cut.complete
    failed = Sample(cell=CELL, repeat=3, kind="soak", status="failed", reason="server exited with code 1")
    stopped = soak.soak_result(CELL, [*windows(growing(5.0, 10)), failed], planned=10)
    assert stopped.reason == "server exited with code 1" and not stopped.verified
    assert stopped.leaking  # the windows measured still tell


def soak_run(tmp_path: Path, cells: list[Cell], samples: list[Sample], data: dict | None = None) -> Run:
    base = data or {"schema": 5, "run_id": "20261202-soak", "environment": {}, "options": {}, "cells": [],
                    "samples": []}
    run = Run.from_dict(base, tmp_path)
    run.cells = cells or run.cells
    run.options |= {"soak_minutes": 1.0, "soak_window": 2.0, "soak_windows": 20}
    run.samples += samples
    return run


def test_a_soak_alone_renders_its_section_chart_and_csv(tmp_path: Path) -> None:
    grower, steady = Cell("grower", "uvicorn", "asyncpg"), Cell("steady", "uvicorn", "asyncpg")
    run = soak_run(tmp_path, [], windows(growing(3.0), cell=grower) + windows([60.0] * 20, cell=steady))
    analysis = analyse(run)
    assert analysis.cells == [] and analysis.leaking == {grower}  # soaked cells are no cells of a matrix
    paths = matrix.render(run, analysis)
    assert [p.name for p in paths] == ["matrix.md", "soak.csv", "soak.png"]
    md = (tmp_path / "matrix.md").read_text()
    assert md.startswith("# insertbench run 20261202-soak\n\n## Soak\n\n") and "## Environment and method" in md
    assert "| `grower/uvicorn/asyncpg` | 20 |" in md and md.count("**leaking**") == 2  # the intro's and the row's
    assert "1 MiB per 100,000 requests" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "soak.csv").read_text())))
    assert len(rows) == 40 and rows[-1]["requests_total"] == str(20 * PER_WINDOW)
    assert rows[0]["server_rss_end_mib"] == f"{growing(3.0)[0]:.2f}"
    assert (tmp_path / "soak.png").read_bytes().startswith(b"\x89PNG")
    assert matrix.render(Run.load(_saved(run)))  # and again from run.json alone


def _saved(run: Run) -> Path:
    run.save()
    return run.directory


def test_a_soaked_matrix_cell_is_marked_leaking_in_the_grids_and_the_csv(tmp_path: Path) -> None:
    data = json.loads((DATA / "run_small.json").read_text())
    cell = Cell("asgi", "uvicorn", "asyncpg")
    run = soak_run(tmp_path, [], windows(growing(4.0)), data)
    matrix.render(run)
    md = (tmp_path / "matrix.md").read_text()
    grids = md.split("## Server CPU per insert")[1].split("\n## ")[0]
    row = next(line for line in grids.splitlines() if line.startswith("| **asgi** |"))  # uvicorn's grid first
    assert row.split(" | ")[2].endswith("**leaking**") and "**leaking**" not in row.split(" | ")[1]
    assert "## Soak" in md and "**leaking**" in md.split("## Every cell")[1].split("\n## ")[0]
    rows = {(r["framework"], r["server"], r["db"]): r
            for r in csv.DictReader(io.StringIO((tmp_path / "matrix.csv").read_text()))}
    assert rows["asgi", "uvicorn", "asyncpg"]["soak_verdict"] == "leaking"
    assert float(rows["asgi", "uvicorn", "asyncpg"]["soak_rss_mib_per_100k_requests"]) == pytest.approx(4.0)
    assert rows["asgi", "granian", "asyncpg"]["soak_verdict"] == rows["asgi", "uvicorn", "none"]["soak_verdict"] == ""
    assert analyse(run).cells[1].repeats == 3  # the soak's windows are not CPU samples of the matrix
    assert cell in run.cells


def _args(**given: object) -> argparse.Namespace:
    names = ("soak", "cells", "duration", *measure_soak.MATRIX_OPTIONS)
    return argparse.Namespace(**dict.fromkeys(names) | given)


def test_soak_options_name_the_fix() -> None:
    apps = discover()
    assert measure_soak.options(_args(), apps) == {}
    chosen = measure_soak.options(_args(soak=2.0, cells=["seed/uvicorn/orm+gcfreeze", "asgi/granian/asyncpg"]), apps)
    assert chosen == {"soak_minutes": 2.0, "soak_window": 5.0, "soak_windows": 24,
                      "soak_cells": ["seed/uvicorn/orm+gcfreeze", "asgi/granian/asyncpg"]}
    assert measure_soak.alone(_args(soak=2.0)) and not measure_soak.alone(_args(soak=2.0, frameworks=["asgi"]))
    for given, said in [({"soak": 1.0}, "--soak needs the cells to soak: --cells framework/server/db"),
                        ({"cells": ["seed/uvicorn/orm"]}, "add --soak MINUTES"),
                        ({"soak": 1.0, "cells": ["seed/uvicorn"]}, "a cell is framework/server/db[+knob]"),
                        ({"soak": 1.0, "cells": ["nope/uvicorn/orm"]}, "no app 'nope'; apps: asgi, "),
                        ({"soak": 1.0, "cells": ["seed/hypercorn/orm"]}, "seed is served by uvicorn, granian"),
                        ({"soak": 1.0, "cells": ["seed/uvicorn/core"]}, "seed runs on orm, not 'core'"),
                        ({"soak": 1.0, "cells": ["seed/uvicorn/orm+gcfrozen"]}, "unknown knob gcfrozen; knobs: "),
                        ({"soak": 1.0, "cells": ["seed/uvicorn/orm+gcfreeze+gcoff"]}, "knob gcoff repeats or excl"),
                        ({"soak": 1.0, "cells": ["seed/uvicorn/orm+pins2025"]}, "is measured by a run of the matrix"),
                        ({"soak": 0.1, "cells": ["seed/uvicorn/orm"]}, "makes 1; the memory slope needs 4 or more")]:
        with pytest.raises(UsageError, match=None) as raised:
            measure_soak.options(_args(**given), apps)
        assert said in str(raised.value), str(raised.value)
        assert "\n" not in str(raised.value)
