"""harness.analysis.stats and .attribution: per-sample and per-cell figures, projection, layer attribution."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from harness.analysis.attribution import Attribution, attribution
from harness.analysis.stats import (
    CellKey,
    CellStats,
    Sample,
    cell_stats,
    cheapest_verified,
    common_groups,
    cores_needed,
    inserts_per_core_s,
    layer_order,
    median_ci,
    original_stack,
    ratio,
    ratio_ci,
    run_cells,
    sample_metrics,
    spread,
)
from harness.model import Run

DATA = Path(__file__).parents[1] / "data"
KEY = CellKey("asgi", "uvicorn", "asyncpg")


def sample(us_per_insert: float = 100.0, repeat: int = 0, key: CellKey = KEY, **fields) -> Sample:
    """An ok, verified sample of 10,000 inserts whose server CPU per insert is `us_per_insert`."""
    cpu_s = us_per_insert * 10_000 / 1e6
    data = {
        "framework": key.framework, "server": key.server, "db": key.db,
        "inserts_per_request": key.inserts_per_request, "repeat": repeat, "status": "ok", "reason": None,
        "verified": True, "verify_errors": [], "window_s": 2.0, "requests": 10_010, "requests_ok": 10_000,
        "errors": 10, "inserts": 10_000, "server_cpu_user_s": cpu_s * 0.75, "server_cpu_system_s": cpu_s * 0.25,
        "pg_cpu_s": 0.3, "loadgen_cpu_s": 0.05005, "statements": 30_000, "transactions": 10_000,
        "latency_ms": {"p50": 1.5, "p90": 2.0, "p99": 4.5, "max": 9.0},
        "handler_cpu_ms_mean": None, "handler_wall_ms_mean": None,
    }
    data.update(fields)
    return Sample.from_dict(data)


def failed(reason: str = "server exited with code 1 during startup: ImportError: x", repeat: int = 0,
           key: CellKey = KEY) -> Sample:
    nulls = dict.fromkeys(["window_s", "requests", "requests_ok", "errors", "inserts", "server_cpu_user_s",
                           "server_cpu_system_s", "pg_cpu_s", "loadgen_cpu_s", "statements", "transactions",
                           "latency_ms", "verified"])
    return sample(repeat=repeat, key=key, status="failed", reason=reason, **nulls)


def test_sample_metrics_arithmetic():
    m = sample(100.0, handler_cpu_ms_mean=7.5, handler_wall_ms_mean=40.0)
    metrics = sample_metrics(m)
    assert metrics.server_cpu_us_per_insert == pytest.approx(100.0)
    assert metrics.user_us_per_insert == pytest.approx(75.0)
    assert metrics.system_us_per_insert == pytest.approx(25.0)
    assert metrics.server_cpu_us_per_request == pytest.approx(100.0)  # 1 insert per request
    assert metrics.pg_cpu_us_per_insert == pytest.approx(30.0)
    assert metrics.loadgen_cpu_us_per_request == pytest.approx(5.0)  # over all requests, not only 2xx
    assert metrics.statements_per_insert == pytest.approx(3.0)
    assert metrics.transactions_per_insert == pytest.approx(1.0)
    assert metrics.rps == pytest.approx(5_000.0)  # 2xx per second of window
    assert (metrics.p50_ms, metrics.p99_ms) == (1.5, 4.5)
    assert metrics.handler_cpu_us_per_request == pytest.approx(7_500.0)
    assert metrics.handler_wall_us_per_request == pytest.approx(40_000.0)


def test_bulk_sample_divides_cpu_by_rows_and_by_requests_separately():
    bulk = sample(50.0, key=CellKey("asgi", "uvicorn", "asyncpg", 10), requests_ok=1_000, requests=1_000)
    metrics = sample_metrics(bulk)
    assert metrics.server_cpu_us_per_insert == pytest.approx(50.0)
    assert metrics.server_cpu_us_per_request == pytest.approx(500.0)


def test_zero_and_unknown_denominators_give_none():
    zero = sample_metrics(sample(inserts=0, requests_ok=0, requests=0, window_s=0.0))
    assert zero.server_cpu_us_per_insert is None
    assert zero.server_cpu_us_per_request is None
    assert zero.loadgen_cpu_us_per_request is None
    assert zero.statements_per_insert is None
    assert zero.rps is None
    unknown = sample_metrics(sample(statements=None, transactions=None, pg_cpu_s=None, server_cpu_system_s=None))
    assert unknown.statements_per_insert is None
    assert unknown.transactions_per_insert is None
    assert unknown.pg_cpu_us_per_insert is None
    assert unknown.server_cpu_us_per_insert is None  # user without system is not the server's CPU
    assert unknown.user_us_per_insert is not None
    assert ratio(None, 5) is None and ratio(5, None) is None and ratio(5, 0) is None
    assert ratio(3, 2, 10) == 15


def test_cell_median_min_max_interval_and_precision_flag():
    cell = cell_stats(KEY, [sample(100.0, 0), sample(104.0, 1), sample(101.0, 2)])
    assert cell.status == "ok" and cell.ok
    assert cell.us_per_insert == pytest.approx(101.0)
    assert (cell.cpu_min, cell.cpu_max) == (pytest.approx(100.0), pytest.approx(104.0))
    assert cell.spread == pytest.approx(4 / 101)
    assert cell.ci == (pytest.approx(100.0), pytest.approx(104.0))  # 3 samples: the bootstrap gives min–max
    assert cell.precision == pytest.approx(2 / 101)
    assert not cell.imprecise  # ±1.98% <= ±5%
    wide = cell_stats(KEY, [sample(100.0, 0), sample(112.0, 1), sample(101.0, 2)])
    assert wide.precision == pytest.approx(6 / 101)
    assert wide.imprecise
    assert cell_stats(KEY, [sample(100.0, 0), sample(112.0, 1), sample(101.0, 2)], precision=0.10).imprecise is False
    alone = cell_stats(KEY, [sample(100.0)])
    assert alone.ci is None and alone.imprecise  # one sample: no interval at all
    assert spread([80.0]) == 0.0
    assert spread([]) is None


def test_cell_medians_of_every_metric_and_summed_errors():
    cell = cell_stats(KEY, [sample(100.0, 0, window_s=1.0), sample(110.0, 1, window_s=2.0),
                            sample(120.0, 2, window_s=4.0)])
    assert cell.median.rps == pytest.approx(5_000.0)
    assert cell.median.user_us_per_insert == pytest.approx(82.5)
    assert cell.errors == 30
    assert cell.repeats == 3


def test_projection():
    assert inserts_per_core_s(100.0) == pytest.approx(10_000.0)
    assert cores_needed(100.0) == pytest.approx(1.0)
    assert cores_needed(750.0) == pytest.approx(7.5)
    assert inserts_per_core_s(None) is None and cores_needed(0.0) is None
    cell = cell_stats(KEY, [sample(250.0)])
    assert cell.inserts_per_core_s == pytest.approx(4_000.0)
    assert cell.cores_for_10k == pytest.approx(2.5)


def test_failed_cell_takes_the_first_failure_and_has_no_numbers():
    cell = cell_stats(KEY, [sample(100.0, 0), failed("first: timeout", 1), failed("second", 2)])
    assert cell.status == "failed"
    assert cell.reason == "first: timeout"
    assert not cell.verified
    assert cell.median is None and cell.us_per_insert is None
    assert cell.inserts_per_core_s is None and cell.cores_for_10k is None
    assert cell.verify_errors == ()  # a failed repeat is reported by its reason, not as "not verified"


def test_missing_cell():
    cell = cell_stats(KEY, [])
    assert cell.status == "missing"
    assert not cell.verified
    assert cell.median is None


def test_verified_only_when_every_sample_is():
    assert cell_stats(KEY, [sample(), sample(repeat=1)]).verified
    cell = cell_stats(KEY, [sample(), sample(repeat=1, verified=False, verify_errors=["3 ids returned twice"]),
                            sample(repeat=2, verified=False)])
    assert cell.status == "ok"
    assert not cell.verified
    assert cell.verify_errors == ("repeat 1: 3 ids returned twice", "repeat 2: not verified")


def ok_cell(framework: str, server: str, db: str, us: float) -> CellStats:
    key = CellKey(framework, server, db)
    return cell_stats(key, [sample(us, key=key)])


def test_attribution_arithmetic():
    cells = [ok_cell("fastapi", "uvicorn", db, us)
             for db, us in [("none", 120.0), ("asyncpg", 220.0), ("coalesced", 140.0), ("core", 300.0),
                            ("orm", 560.0)]]
    [row] = attribution(cells)
    assert row == Attribution("fastapi", "uvicorn", 1, http_framework=pytest.approx(120.0),
                              driver=pytest.approx(100.0), sqlalchemy_core=pytest.approx(80.0),
                              orm_session=pytest.approx(260.0), coalescing_saves=pytest.approx(80.0))
    assert sum(row.layers) == pytest.approx(560.0)


def test_attribution_skips_what_missing_or_failed_cells_would_need():
    key = CellKey("asgi", "granian", "core")
    cells = [ok_cell("asgi", "granian", "none", 22.0), ok_cell("asgi", "granian", "asyncpg", 100.0),
             cell_stats(key, [failed(key=key)]), ok_cell("asgi", "granian", "orm", 390.0),
             ok_cell("seed", "uvicorn", "orm", 750.0)]
    rows = attribution(cells)
    assert [r.framework for r in rows] == ["asgi"]  # seed alone has nothing to attribute
    [row] = rows
    assert row.driver == pytest.approx(78.0)
    assert row.sqlalchemy_core is None and row.orm_session is None and row.coalescing_saves is None


def test_original_stack_prefers_seed_on_uvicorn_then_falls_back_to_fastapi_orm():
    seed_granian, seed_uvicorn = ok_cell("seed", "granian", "orm", 700.0), ok_cell("seed", "uvicorn", "orm", 750.0)
    fastapi_orm = ok_cell("fastapi", "uvicorn", "orm", 560.0)
    assert original_stack([seed_granian, seed_uvicorn, fastapi_orm]) is seed_uvicorn
    assert original_stack([seed_granian, fastapi_orm]) is seed_granian
    broken = cell_stats(CellKey("seed", "uvicorn", "orm"), [failed(key=CellKey("seed", "uvicorn", "orm"))])
    assert original_stack([broken, fastapi_orm]) is fastapi_orm
    assert original_stack([ok_cell("asgi", "uvicorn", "orm", 400.0)]) is None


def test_cheapest_verified_ignores_none_layer_and_unverified_cells():
    unverified_key = CellKey("asgi", "uvicorn", "coalesced")
    unverified = cell_stats(unverified_key, [sample(20.0, key=unverified_key, verified=False)])
    cells = [ok_cell("asgi", "uvicorn", "none", 10.0), unverified, ok_cell("asgi", "uvicorn", "asyncpg", 100.0),
             ok_cell("asgi", "granian", "asyncpg", 95.0)]
    assert cheapest_verified(cells).key == CellKey("asgi", "granian", "asyncpg")
    assert cheapest_verified(cells[:2]) is None


def test_layer_order_is_display_order_then_unknown_layers():
    keys = [CellKey("a", "s", db) for db in ["orm", "mine", "none", "asyncpg"]]
    assert layer_order(keys) == ["none", "asyncpg", "orm", "mine"]


def test_load_run_reads_the_fixture_from_file_or_directory(tmp_path):
    run = Run.load(DATA / "run_small.json")
    assert run.run_id == "20261125-0102-3f9c2ab"
    (tmp_path / "run.json").write_text((DATA / "run_small.json").read_text())
    again = Run.load(tmp_path)
    assert (again.cells, again.samples, again.directory) == (run.cells, run.samples, tmp_path)
    cells = run_cells(run)
    assert [c.key for c in cells] == list(run.cells)
    statuses = {c.key.label: c.status for c in cells}
    assert statuses["fastapi/granian/orm"] == "failed"
    assert statuses["seed/granian/orm"] == "missing"
    widest = max((c for c in cells if c.ok), key=lambda c: c.precision)
    assert widest.key.label == "asgi/granian/core" and widest.precision == pytest.approx(0.0471, abs=1e-4)


def test_samples_of_unplanned_cells_are_kept_and_schema_is_checked(tmp_path):
    data = json.loads((DATA / "run_small.json").read_text())
    data["cells"] = data["cells"][:1]
    run = Run.from_dict(data)
    assert len(run.every_cell) == 17  # the planned one, then the sampled ones in order of appearance
    data["schema"] = 99
    with pytest.raises(ValueError, match="schema 99"):
        Run.from_dict(data)
    with pytest.raises(FileNotFoundError, match="results/<run-id>"):
        Run.load(tmp_path / "nowhere")


def test_median_interval_from_scipy_bootstrap():
    assert median_ci([5.0]) is None  # one sample: no interval
    assert median_ci([7.0, 7.0, 7.0]) == (7.0, 7.0)
    values = [100.0, 101.0, 99.0, 100.5, 98.5, 102.0, 100.2, 99.7, 100.9, 101.3, 99.1]
    low, high = median_ci(values)
    assert 98.5 <= low < statistics.median(values) < high <= 102.0
    assert median_ci(values) == (low, high)  # seeded: the same interval every time
    wider = median_ci([80.0, 100.0, 120.0, 90.0, 110.0, 85.0, 115.0])
    assert wider[1] - wider[0] > high - low


def test_ratio_interval_clear_difference_tie_and_self():
    a = [100.0, 102.0, 98.0, 101.0, 99.0]
    faster = ratio_ci(a, [80.0, 81.0, 79.0, 80.5, 79.5])
    assert faster[1] < 1  # B is clearly cheaper
    tie = ratio_ci(a, [99.0, 103.0, 97.0, 101.5, 100.0])
    assert tie[0] < 1 < tie[1]
    itself = ratio_ci(a, a)
    assert itself[0] <= 1 <= itself[1]
    assert ratio_ci([1.0], a) is None


def test_common_groups_letter_cells_whose_intervals_overlap():
    groups = common_groups({"none": (10.0, 12.0), "coalesced": (11.5, 13.0), "asyncpg": (20.0, 22.0),
                            "core": (40.0, 44.0), "orm": (43.0, 47.0), "failed": None})
    assert groups == {"none": "a", "coalesced": "a", "core": "b", "orm": "b"}
    chain = common_groups({"x": (1.0, 3.0), "y": (2.5, 5.0), "z": (4.5, 6.0)})  # x~y, y~z, but not x~z
    assert chain == {"x": "a", "y": "ab", "z": "b"}
    assert common_groups({"alone": (1.0, 2.0)}) == {}


def test_server_memory_is_the_median_of_the_samples_and_unknown_where_not_measured():
    samples = [sample(100, repeat=i, server_rss_warm_mib=warm, server_rss_end_mib=warm + 2)
               for i, warm in enumerate((40.0, 44.0, 42.0))]
    stats = cell_stats(KEY, samples)
    assert (stats.median.server_rss_warm_mib, stats.median.server_rss_end_mib) == (42.0, 44.0)
    older = cell_stats(KEY, [sample(100, repeat=i) for i in range(3)])  # a run made before memory was recorded
    assert older.median.server_rss_warm_mib is None and older.median.server_rss_end_mib is None
