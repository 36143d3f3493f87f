"""The way down and the question's comparisons: pure functions of cells built from synthetic samples."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from harness.analysis.checks import body_reads, busy_cores, interpreters, statements
from harness.analysis.ladder import ladder, ladders
from harness.analysis.stats import CellStats, cell_stats
from harness.model import Cell, Sample
from harness.report.answer import body_read_section, cross_checks, headline, interpreter_section, what_to_change


def stats(cell: Cell, *us: float) -> CellStats:
    samples = []
    for repeat, value in enumerate(us):
        cpu_s = value * 10_000 / 1e6
        data = {**asdict(cell), "repeat": repeat, "status": "ok", "verified": True, "window_s": cpu_s,
                "requests": 10_000 // cell.inserts_per_request, "requests_ok": 10_000 // cell.inserts_per_request,
                "errors": 0, "inserts": 10_000, "server_cpu_user_s": cpu_s * 0.8, "server_cpu_system_s": cpu_s * 0.2,
                "statements": 30_000 if cell.db in ("orm", "core") else 10_000, "transactions": 10_000,
                "latency_ms": {"p50": 1.0, "p99": 2.0}}
        samples.append(Sample.from_dict(data))
    return cell_stats(cell, samples)


def C(framework: str, server: str, db: str, n: int = 1, shape: str = "one", python: str = "") -> Cell:
    return Cell(framework, server, db, n, shape, python)


SEED = C("seed", "uvicorn", "orm")
MATRIX = {
    SEED: (800, 810, 790),
    C("fastapi", "uvicorn", "orm"): (900, 905, 895),
    C("fastapi", "uvicorn", "core"): (600, 610, 590),
    C("fastapi", "uvicorn", "asyncpg"): (230, 235, 225),
    C("fastapi", "uvicorn", "coalesced"): (150, 152, 148),
    C("asgi", "uvicorn", "asyncpg"): (90, 92, 88),
    C("asgi", "uvicorn", "coalesced"): (42, 43, 41),
    C("asgi", "granian", "coalesced"): (50, 51, 49),
    C("asgi", "uvicorn", "coalesced", python="3.13.0"): (40, 41, 39),
    C("seed", "uvicorn", "orm", python="3.13.0"): (700, 705, 695),
}


def cells(extra: dict | None = None) -> list[CellStats]:
    return [stats(cell, *us) for cell, us in (MATRIX | (extra or {})).items()]


def test_ladder_takes_the_biggest_measured_saving_first_and_the_interpreter_last():
    found = ladder(cells(), SEED)
    changes = [r.change for r in found.rungs]
    assert changes[0] == "the original app, as published"
    assert changes[1].startswith("ORM session → SQLAlchemy Core")  # seed → fastapi/core saves 200
    assert changes[2] == "SQLAlchemy Core → raw asyncpg"  # 370, beats nothing else measured from core
    assert changes[3] == "FastAPI → a bare ASGI app"  # 140 at asyncpg, more than coalescing's 80
    assert changes[4].startswith("raw asyncpg → coalescing")
    assert changes[5] == "Python (this run's) → 3.13.0"
    assert [round(r.us) for r in found.rungs] == [800, 600, 230, 90, 42, 40]
    assert found.rungs[-1].ratio == pytest.approx(800 / 40) and found.rungs[1].saving == pytest.approx(200)
    assert found.rungs[-1].cores == pytest.approx(0.4)
    assert found.rungs[-1].distinct is False  # 40 [39–41] overlaps 42 [41–43]
    assert found.not_taken == ("uvicorn → granian (+8.0 µs per insert at `asgi/uvicorn/coalesced`)",)


def test_ladder_skips_what_was_not_measured_and_says_so_for_the_interpreter():
    without = [c for c in cells() if c.key.python != "3.13.0" or c.key.framework == "seed"]
    found = ladder(without, SEED)
    assert found.rungs[-1].cell.key == C("asgi", "uvicorn", "coalesced")
    assert "left out rather than assumed" in found.note
    assert ladder(without, C("seed", "granian", "orm")) is None  # no such cell: no ladder


def test_ladder_for_several_inserts_goes_to_one_statement():
    many = {C("seed", "uvicorn", "orm", 10, "each"): (500, 505, 495),
            C("fastapi", "uvicorn", "core", 10, "each"): (400, 405, 395),
            C("fastapi", "uvicorn", "core", 10, "bulk"): (80, 81, 79),
            C("fastapi", "uvicorn", "asyncpg", 10, "bulk"): (30, 31, 29)}
    found = ladders(cells(many))
    assert [lad.inserts_per_request for lad in found] == [1, 10]
    assert [r.change for r in found[1].rungs][1:] == [
        "ORM session → SQLAlchemy Core (FastAPI kept; the handler's AsyncSession goes)",
        "10 INSERTs one by one → one statement", "SQLAlchemy Core → raw asyncpg"]
    text = what_to_change(ladders(cells(many)))
    assert "**10 inserts per request" in text and "| 3 | SQLAlchemy Core → raw asyncpg |" in text
    assert ("one by one, the original handler costs 500 µs per insert; the steps below take that to 30.0 (16.7× "
            "less)") in headline(ladders(cells(many)))


def test_interpreters_and_body_reads_pair_each_cell_with_its_baseline():
    extra = {C("asgi", "uvicorn", "none"): (36, 37, 35), C("asgi", "uvicorn", "none", shape="get"): (25, 26, 24)}
    found = interpreters(cells(extra))
    assert {(v.cell.key.framework, round(v.ratio, 3)) for v in found} == {("asgi", round(40 / 42, 3)),
                                                                          ("seed", round(700 / 800, 3))}
    reads = body_reads(cells(extra))
    assert len(reads) == 1 and reads[0].cell.key.shape == "one" and reads[0].baseline.key.shape == "get"
    section = body_read_section(cells(extra))
    assert "| `asgi/uvicorn/none` | 25.0 [24.0–26.0] | 36.0 [35.0–37.0] | 11.0 |" in section
    pythons = [{"label": "", "version": "3.11.7", "base": "/py311", "build": {"libpython": "shared"}},
               {"label": "3.13.0", "version": "3.13.0", "base": "/py313", "build": {}}]
    table = interpreter_section(cells(), {"python": "3.11.7"}, {"pythons": pythons})
    assert "| `seed/uvicorn/orm` | 3.13.0 (`/py313`; no PGO) | 800 [790–810] | 700 [695–705] | 0.88× |" in table
    assert interpreter_section([c for c in cells() if not c.key.python], {}, {"pythons": pythons}) is None


def test_cross_checks_busy_cores_and_statements():
    every = cells()
    assert busy_cores(every) == pytest.approx([1.0] * len(every))  # each window as long as its CPU time: one core each
    found = statements(every)
    assert found[("orm", 1, "one")] == 3.0 and found[("asyncpg", 1, "one")] == 1.0
    assert "here it is 1.00–1.00" in cross_checks(every)


def test_a_layer_not_measured_is_stepped_over():
    found = ladder([c for c in cells() if c.key != C("fastapi", "uvicorn", "core")], SEED)
    assert found.rungs[1].change == "ORM session → raw asyncpg (FastAPI kept; the handler's AsyncSession goes)"
    assert found.rungs[1].cell.key == C("fastapi", "uvicorn", "asyncpg")


def test_the_bare_app_steps_to_its_rsgi_twin_under_granian_when_that_saves():
    extra = {C("asgi", "granian", "coalesced"): (40, 40.5, 39.5), C("rsgi", "granian-rsgi", "coalesced"): (30, 31, 29)}
    found = ladder(cells(extra), SEED)
    changes = [r.change for r in found.rungs]
    assert "uvicorn → granian" in changes
    assert changes[-1] == "ASGI → granian's own interface, RSGI (the bare app's twin)"
    assert found.rungs[-1].cell.key == C("rsgi", "granian-rsgi", "coalesced") and round(found.rungs[-1].us) == 30
    dear = {C("rsgi", "granian-rsgi", "coalesced"): (60, 61, 59), C("asgi", "granian", "coalesced"): (40, 40.5, 39.5)}
    assert "RSGI" not in " ".join(r.change for r in ladder(cells(dear), SEED).rungs)


def K(cell: Cell, knob: str) -> Cell:
    return cell.but(knob=knob)


def test_the_in_stack_ladder_takes_knobs_beyond_the_noise_and_lists_the_rest():
    from harness.analysis.ladder import in_stack, in_stack_wanted

    extra = {K(SEED, "autocommit"): (600, 605, 595), K(SEED, "gcfreeze"): (700, 705, 695),
             K(SEED, "pool4"): (798, 812, 790), K(SEED, "psycopg"): (900, 905, 895),
             K(SEED, "autocommit+gcfreeze"): (500, 505, 495)}
    found = in_stack(cells(extra), SEED)
    assert [r.knob for r in found.rungs] == ["", "autocommit", "gcfreeze"]
    assert [round(r.us) for r in found.rungs] == [800, 600, 500]
    assert all(r.rests_on == "CPU time" for r in found.rungs[1:])
    assert any("`pool4`" in t and "within noise" in t for t in found.not_taken)
    assert any("`psycopg`" in t and "costs more" in t for t in found.not_taken)
    assert [(t.knob, round(t.delta)) for t in found.alone] == [("psycopg", 100), ("pool4", -2)]
    from harness.axes import KNOBS
    from harness.report.answer import in_stack_table

    shown = in_stack_table(found)  # every knob measured, taken or not, with the code it takes
    assert all(f"`{KNOBS[k].code}`" in shown for k in ("autocommit", "gcfreeze", "pool4", "psycopg"))
    assert "| psycopg |" in shown and "+100" in shown and "−2.0" in shown
    wanted = in_stack_wanted(cells(extra), SEED)
    assert K(SEED, "pool4") in wanted and K(SEED, "response") in wanted  # every knob alone is wanted
    assert K(SEED, "pool4+gcfreeze+autocommit") not in wanted  # pool4 saved nothing alone: not combined
    assert K(SEED, "autocommit+pool4") not in wanted


def test_the_beyond_ladder_keeps_the_knobs_and_steps_to_the_driver_at_equal_statements():
    from harness.analysis.ladder import beyond_wanted, ladders

    extra = {K(SEED, "autocommit"): (600, 605, 595),
             C("fastapi", "uvicorn", "core", ).but(knob="autocommit"): (450, 455, 445),
             C("fastapi", "uvicorn", "asyncpg"): (230, 235, 225)}
    found = ladders(cells(extra))[0]
    assert found.rungs[0].change == "the original app with the knobs above"
    assert found.rungs[0].ratio == pytest.approx(800 / 600, rel=0.02)  # against the original as published
    assert found.rungs[1].cell.key == C("fastapi", "uvicorn", "core").but(knob="autocommit")
    assert found.rungs[2].change == "SQLAlchemy Core → raw asyncpg (one statement each: autocommit)"
    assert found.rungs[2].cell.key == C("fastapi", "uvicorn", "asyncpg")
    here = C("fastapi", "uvicorn", "core")
    wanted = beyond_wanted([stats(here, 600, 605, 595)], here, ["uvicorn", "granian"])
    assert here.but(db="asyncpg", knob="transaction") in wanted  # Core's BEGIN/COMMIT against a transaction
    assert here.but(server="granian") in wanted and here.but(framework="asgi") in wanted


def test_the_load_generator_is_read_in_the_cheapest_servers_own_cell_and_at_the_floor():
    from dataclasses import replace

    from harness.analysis.checks import floor_gaps, loadgen_margin
    from harness.report.answer import floor_section, loadgen_line

    def with_loadgen(c: CellStats, loadgen_us: float) -> CellStats:
        return replace(c, median=replace(c.median, loadgen_cpu_us_per_request=loadgen_us))

    bare = with_loadgen(stats(C("asgi", "granian", "none"), 30, 31, 29), 10)
    rsgi = with_loadgen(stats(C("rsgi", "granian-rsgi", "none"), 20, 21, 19), 12)
    floor = with_loadgen(stats(C("floor", "uvloop", "none"), 9, 9.5, 8.5), 8)
    margin = loadgen_margin([bare, rsgi, floor])
    assert margin.fastest is rsgi and margin.loadgen_us == 12 and margin.floor is floor
    assert [c.key for c, _ in margin.close] == [rsgi.key]  # 20 µs against 12: under 2×
    line = loadgen_line(margin)
    assert "1.7× ahead" in line and "`rsgi/granian-rsgi/none` 1.7×" in line
    found, gaps = floor_gaps([bare, rsgi, floor])
    assert found is floor and [(c.key.framework, round(g)) for c, g in gaps] == [("rsgi", 11), ("asgi", 21)]
    assert "+11.0" in floor_section([bare, rsgi, floor])


def test_the_gap_to_the_floor_is_split_by_the_profiles_packages():
    from harness.report.answer import split_gaps

    floor, bare = stats(C("floor", "uvloop", "none"), 10, 10, 10), stats(C("rsgi", "granian-rsgi", "none"), 30, 30, 30)
    rows = [("floor", "uvloop", "none", 1, "kernel", 0.7, 7.0), ("floor", "uvloop", "none", 1, "uvloop", 0.3, 3.0),
            ("rsgi", "granian-rsgi", "none", 1, "kernel", 0.4, 12.0),
            ("rsgi", "granian-rsgi", "none", 1, "granian", 0.6, 18.0)]
    text = split_gaps(floor, [bare], rows)
    assert "+20.0 µs per request above the floor: granian +18.0, kernel +5.0, uvloop -3.0." in text
    assert split_gaps(floor, [bare], rows[:2]) is None  # the cell was not profiled


def test_the_body_read_section_says_whether_rsgi_removes_granians_cost():
    found = [stats(C("asgi", "granian", "none"), 60, 61, 59), stats(C("asgi", "granian", "none", shape="get"), 30),
             stats(C("rsgi", "granian-rsgi", "none"), 55, 56, 54),
             stats(C("rsgi", "granian-rsgi", "none", shape="get"), 28)]
    assert "RSGI does not remove it" in body_read_section(found)
    found[2] = stats(C("rsgi", "granian-rsgi", "none"), 33, 34, 32)
    assert "RSGI removes most of it" in body_read_section(found)


def profiled(cell: CellStats, under: dict[str, float]) -> CellStats:
    """The cell as if its window had been profiled: ``under`` is each package's inclusive share of user CPU."""
    from dataclasses import replace
    return replace(cell, profile={"profile_shares": {"python": 1.0}, "profile_inclusive": under,
                                  "profile_inclusive_system": {}})


def test_the_ladder_says_which_packages_a_step_removes_and_what_ran_under_them():
    found = {c.key: c for c in cells()}
    core, raw = C("fastapi", "uvicorn", "core"), C("fastapi", "uvicorn", "asyncpg")
    found[core] = profiled(found[core], {"sqlalchemy": 0.75, "fastapi": 0.2, "asyncpg": 0.1, "python": 1.0})
    found[raw] = profiled(found[raw], {"fastapi": 0.5, "asyncpg": 0.3, "python": 1.0})
    text = what_to_change(ladders(list(found.values())))
    # 75% of core's user CPU (80% of 600 µs) and none of its system CPU ran under sqlalchemy: 360 µs
    assert "step 2 removes sqlalchemy (360 µs per insert ran under it) in `fastapi/uvicorn/core` and saved 370" in text
    assert "removes fastapi" not in text and "removes asyncpg" not in text  # still under the step's cell
    found[raw] = profiled(found[raw], {"fastapi": 0.5, "asyncpg": 0.3, "sqlalchemy": 0.02, "python": 1.0})
    assert "removes sqlalchemy" not in what_to_change(ladders(list(found.values()))), "2% is still there"


def test_the_n_insert_cells_beyond_the_stack_carry_the_knobs_the_n_insert_ladder_took():
    from harness.analysis.ladder import mirrored

    seed10 = C("seed", "uvicorn", "orm", 10, "each")
    measured = {SEED: (800, 810, 790), SEED.but(knob="gcfreeze"): (600, 605, 595),
                C("fastapi", "uvicorn", "core").but(knob="gcfreeze"): (400, 405, 395),
                seed10: (200, 202, 198), seed10.but(knob="gcfreeze"): (199, 203, 197)}  # within noise at ×10
    found = mirrored([stats(cell, *us) for cell, us in measured.items()], SEED, seed10)
    core10 = C("fastapi", "uvicorn", "core", 10, "each")
    assert seed10.but(knob="gcfreeze") in found  # an in-stack rung keeps its knob: the N-insert in-stack candidate
    assert core10 in found and core10.but(knob="gcfreeze") not in found
    assert core10.but(shape="bulk") in found  # the last rung, in one statement too
