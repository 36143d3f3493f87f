"""harness.report.compare: verdicts on fixed runs, the written comparison."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from harness.analysis.compare import (
    FASTER,
    SAME,
    SLOWER,
    UNDECIDABLE,
    compare,
    instructions_verdict,
    rank_test,
    samples_needed,
    smallest_p,
    verdict,
)
from harness.model import Cell, Run
from harness.report.compare import summary

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parents[1] / "data"


def fixture(samples: int = 5) -> dict:
    """The small run, with ``samples`` per cell: the fixture's 3, then copies 1% above and below."""
    data = json.loads((DATA / "run_small.json").read_text())
    extra = []
    for s in data["samples"]:
        for n, factor in enumerate((1.01, 0.99)[: samples - 3]):
            if s["repeat"] == 0 and s.get("server_cpu_user_s") is not None:
                extra.append(s | {"repeat": 3 + n, "server_cpu_user_s": s["server_cpu_user_s"] * factor,
                                  "server_cpu_system_s": s["server_cpu_system_s"] * factor})
    data["samples"] += extra
    return data


def scaled(data: dict, factors: dict[str, float], instructions: dict[str, int] | None = None) -> dict:
    """A copy of the run whose cells (framework/server/db) cost `factor` times as much CPU."""
    data = copy.deepcopy(data)
    for s in data["samples"]:
        factor = factors.get(f"{s['framework']}/{s['server']}/{s['db']}", 1.0)
        if s.get("server_cpu_user_s") is not None:
            s["server_cpu_user_s"] *= factor
            s["server_cpu_system_s"] *= factor
    for label, count in (instructions or {}).items():
        framework, server, db = label.split("/")
        data["samples"].append({"framework": framework, "server": server, "db": db, "inserts_per_request": 1,
                                "repeat": 0, "kind": "instructions", "status": "ok", "verified": True,
                                "requests_ok": 1000, "inserts": 1000, "instructions": count})
    return data


def test_verdicts():
    assert verdict((0.80, 0.95), p=0.01) == FASTER
    assert verdict((1.02, 1.30), p=0.01) == SLOWER
    assert verdict((0.97, 1.04), p=0.01) == SAME
    assert verdict((0.80, 0.95), p=0.10) == SAME  # the interval alone is not enough
    assert verdict(None) == "too few samples"
    assert rank_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)  # 3 against 3: never below 0.1
    assert rank_test([1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]) < 0.01
    assert instructions_verdict(1_000_000, 1_011_000) == SLOWER
    assert instructions_verdict(1_000_000, 1_009_000) == SAME
    assert instructions_verdict(1_000_000, 980_000) == FASTER
    assert instructions_verdict(None, 5) is None


def test_a_clear_difference_a_tie_and_a_failed_cell():
    a = Run.from_dict(fixture())
    b = Run.from_dict(scaled(fixture(), {"asgi/uvicorn/orm": 0.7, "seed/uvicorn/orm": 1.4}))
    rows, only_a, only_b = compare(a, b)
    by_label = {r.cell.label: r for r in rows}
    assert by_label["asgi/uvicorn/orm"].verdict == FASTER and by_label["asgi/uvicorn/orm"].ratio == pytest.approx(0.7)
    assert by_label["seed/uvicorn/orm"].verdict == SLOWER
    assert by_label["asgi/uvicorn/none"].verdict == SAME
    assert by_label["fastapi/granian/orm"].verdict.startswith("not comparable (A and B failed")
    assert only_a == only_b == []


def test_a_run_compared_with_itself_says_no_change_everywhere():
    a = Run.from_dict(scaled(fixture(), {}, {"asgi/uvicorn/none": 183_600}))
    rows, _, _ = compare(a, a)
    comparable = [r for r in rows if r.ratio is not None]
    assert comparable and all(r.verdict == SAME and r.ratio == 1.0 for r in comparable)
    [counted] = [r for r in rows if r.instructions_verdict]
    assert counted.cell == Cell("asgi", "uvicorn", "none") and counted.instructions_verdict == SAME


def test_three_samples_against_three_cannot_tell_and_say_how_many_could():
    a = Run.from_dict(fixture(samples=3))
    b = Run.from_dict(scaled(fixture(samples=3), {"asgi/uvicorn/orm": 0.5}))
    rows, _, _ = compare(a, b)
    [row] = [r for r in rows if r.cell.label == "asgi/uvicorn/orm"]
    assert row.ratio == pytest.approx(0.5) and row.ci[1] < 1 and row.p == pytest.approx(0.1)
    assert row.verdict == UNDECIDABLE and (row.n_a, row.n_b) == (3, 3)
    assert smallest_p(3, 3) == pytest.approx(0.1) and smallest_p(4, 4) == pytest.approx(2 / 70)
    assert samples_needed() == 4
    text = summary(rows)
    assert "cannot tell in" in text and "p cannot go below 0.100" in text and "--repeats 4" in text
    five = compare(Run.from_dict(fixture()), Run.from_dict(fixture()))[0]
    assert all(r.verdict == SAME for r in five if r.ci)  # five against five can decide: no change here


def test_cells_in_one_run_only_are_listed():
    data = fixture()
    fewer = copy.deepcopy(data)
    fewer["cells"] = [c for c in fewer["cells"] if c["framework"] != "seed"]
    fewer["samples"] = [s for s in fewer["samples"] if s["framework"] != "seed"]
    rows, only_a, only_b = compare(Run.from_dict(data), Run.from_dict(fewer))
    assert [c.label for c in only_a] == ["seed/uvicorn/orm", "seed/granian/orm"] and only_b == []
    assert len(rows) == 16


def write_run(results: Path, name: str, data: dict) -> None:
    (results / name).mkdir(parents=True)
    (results / name / "run.json").write_text(json.dumps(data))
