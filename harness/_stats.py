"""From raw samples to the figures a reader sees: server CPU per insert, and what it is made of.

The quantity insertbench measures is **server CPU per insert**: the growth in user + system CPU time of
the server process and all its descendants over one measured window, divided by the rows inserted in
that window as counted in the database (for the `none` layer: items the server acknowledged). CPU time,
not wall time, because the question is how many cores a given insert rate needs; rows counted in the
database, not requests sent, so an endpoint that answers without inserting cannot look cheap.

Each cell (framework x server x database layer x inserts per request) is measured in several repeats,
interleaved with the other cells. A cell's figure is the median of its repeats, shown with the min and
max; a spread (max - min) / median above `SPREAD_LIMIT` is flagged, because such a cell was disturbed
by something other than its own work. A cell with any failed repeat is failed as a whole: a number
from the repeats that happened to succeed would be a number nobody should quote.

Everything here is a pure function of run.json, so re-rendering a run reproduces its report exactly.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from harness._apps import LAYERS  # display order; others follow, as found
from harness._bench import SCHEMA
from harness._bench import Cell as CellKey

SPREAD_LIMIT = 0.05
TARGET_INSERTS_PER_S = 10_000


def bulk_suffix(inserts_per_request: int) -> str:
    return f" ×{inserts_per_request}" if inserts_per_request != 1 else ""


@dataclass(frozen=True)
class Sample:
    """One measured window of one cell, as the harness recorded it."""

    cell: CellKey
    repeat: int
    ok: bool
    reason: str | None
    verified: bool
    verify_errors: tuple[str, ...]
    window_s: float | None
    requests: int | None
    requests_ok: int | None
    errors: int | None
    inserts: int | None
    server_cpu_user_s: float | None
    server_cpu_system_s: float | None
    pg_cpu_s: float | None
    loadgen_cpu_s: float | None
    statements: int | None
    transactions: int | None
    p50_ms: float | None
    p99_ms: float | None
    handler_cpu_ms_mean: float | None
    handler_wall_ms_mean: float | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        latency = data.get("latency_ms") or {}
        return cls(
            cell=CellKey.from_dict(data),
            repeat=int(data.get("repeat") or 0),
            ok=data.get("status") == "ok",
            reason=data.get("reason"),
            verified=data.get("verified") is True,
            verify_errors=tuple(str(e) for e in data.get("verify_errors") or ()),
            window_s=data.get("window_s"),
            requests=data.get("requests"),
            requests_ok=data.get("requests_ok"),
            errors=data.get("errors"),
            inserts=data.get("inserts"),
            server_cpu_user_s=data.get("server_cpu_user_s"),
            server_cpu_system_s=data.get("server_cpu_system_s"),
            pg_cpu_s=data.get("pg_cpu_s"),
            loadgen_cpu_s=data.get("loadgen_cpu_s"),
            statements=data.get("statements"),
            transactions=data.get("transactions"),
            p50_ms=latency.get("p50"),
            p99_ms=latency.get("p99"),
            handler_cpu_ms_mean=data.get("handler_cpu_ms_mean"),
            handler_wall_ms_mean=data.get("handler_wall_ms_mean"),
        )


@dataclass(frozen=True)
class Run:
    """A whole run.json: where it ran, how, the planned cells and every sample."""

    run_id: str
    environment: Mapping[str, Any]
    options: Mapping[str, Any]
    cells: tuple[CellKey, ...]  # planned order, then any cell sampled but not planned
    samples: tuple[Sample, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        if data.get("schema") != SCHEMA:
            raise ValueError(
                f"run.json has schema {data.get('schema')!r}; this report reads schema {SCHEMA}. "
                "Re-run the benchmark, or render it with the insertbench version that wrote it."
            )
        samples = tuple(Sample.from_dict(s) for s in data.get("samples") or ())
        planned = [CellKey.from_dict(c) for c in data.get("cells") or ()]
        cells = list(dict.fromkeys(planned + [s.cell for s in samples]))
        return cls(
            run_id=str(data.get("run_id", "")),
            environment=data.get("environment") or {},
            options=data.get("options") or {},
            cells=tuple(cells),
            samples=samples,
        )


def load_run(path: Path) -> Run:
    """Read a run from its run.json, or from the run directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass a results/<run-id> directory or its run.json.")
    return Run.from_dict(json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class Metrics:
    """The figures of one sample, or the medians of a cell's samples. None where unknown."""

    server_cpu_us_per_insert: float | None
    server_cpu_us_per_request: float | None
    user_us_per_insert: float | None
    system_us_per_insert: float | None
    pg_cpu_us_per_insert: float | None
    loadgen_cpu_us_per_request: float | None
    statements_per_insert: float | None
    transactions_per_insert: float | None
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    handler_cpu_us_per_request: float | None  # the seed app's own in-handler process_time() figure
    handler_wall_us_per_request: float | None


def ratio(numerator: float | None, denominator: float | None, scale: float = 1.0) -> float | None:
    """numerator * scale / denominator, or None when either is unknown or the denominator is zero."""
    if numerator is None or not denominator:
        return None
    return numerator * scale / denominator


def ms_to_us(ms: float | None) -> float | None:
    return None if ms is None else ms * 1e3


def server_cpu_s(sample: Sample) -> float | None:
    if sample.server_cpu_user_s is None or sample.server_cpu_system_s is None:
        return None
    return sample.server_cpu_user_s + sample.server_cpu_system_s


def sample_metrics(sample: Sample) -> Metrics:
    """Per-insert and per-request figures of one sample."""
    cpu_s = server_cpu_s(sample)
    return Metrics(
        server_cpu_us_per_insert=ratio(cpu_s, sample.inserts, 1e6),
        server_cpu_us_per_request=ratio(cpu_s, sample.requests_ok, 1e6),
        user_us_per_insert=ratio(sample.server_cpu_user_s, sample.inserts, 1e6),
        system_us_per_insert=ratio(sample.server_cpu_system_s, sample.inserts, 1e6),
        pg_cpu_us_per_insert=ratio(sample.pg_cpu_s, sample.inserts, 1e6),
        loadgen_cpu_us_per_request=ratio(sample.loadgen_cpu_s, sample.requests, 1e6),
        statements_per_insert=ratio(sample.statements, sample.inserts),
        transactions_per_insert=ratio(sample.transactions, sample.inserts),
        rps=ratio(sample.requests_ok, sample.window_s),
        p50_ms=sample.p50_ms,
        p99_ms=sample.p99_ms,
        handler_cpu_us_per_request=ms_to_us(sample.handler_cpu_ms_mean),
        handler_wall_us_per_request=ms_to_us(sample.handler_wall_ms_mean),
    )


def median_or_none(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def median_metrics(metrics: list[Metrics]) -> Metrics:
    """Field by field median, ignoring unknown values."""
    return Metrics(*(median_or_none(getattr(m, f.name) for m in metrics) for f in fields(Metrics)))


def spread(values: list[float]) -> float | None:
    """(max - min) / median: how far the repeats of one cell disagree."""
    return ratio(max(values) - min(values), statistics.median(values)) if values else None


def inserts_per_core_s(us_per_insert: float | None) -> float | None:
    """Inserts one fully busy core sustains per second at this CPU cost."""
    return ratio(1e6, us_per_insert)


def cores_needed(us_per_insert: float | None, inserts_per_s: float = TARGET_INSERTS_PER_S) -> float | None:
    """Cores of server CPU needed for `inserts_per_s` at this CPU cost."""
    return ratio(inserts_per_s, inserts_per_core_s(us_per_insert))


@dataclass(frozen=True)
class CellStats:
    """A cell's result. `median` and the figures after it are None unless status is "ok"."""

    key: CellKey
    status: str  # "ok", "failed" (any repeat failed) or "missing" (no samples)
    reason: str | None
    verified: bool
    verify_errors: tuple[str, ...]
    repeats: int
    errors: int | None
    median: Metrics | None = None
    cpu_min: float | None = None
    cpu_max: float | None = None
    spread: float | None = None
    spread_flag: bool = False
    inserts_per_core_s: float | None = None
    cores_for_10k: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def us_per_insert(self) -> float | None:
        return self.median.server_cpu_us_per_insert if self.median else None


def verification_problems(samples: list[Sample]) -> tuple[str, ...]:
    """Each repeat's verification errors (a failed repeat is reported by its reason instead)."""
    problems: list[str] = []
    for s in samples:
        errors = s.verify_errors or (() if s.verified or not s.ok else ("not verified",))
        problems += [f"repeat {s.repeat}: {e}" for e in errors]
    return tuple(dict.fromkeys(problems))


def cell_stats(key: CellKey, samples: list[Sample]) -> CellStats:
    """Aggregate the samples of one cell."""
    known_errors = [s.errors for s in samples if s.errors is not None]
    base = {
        "key": key,
        "verified": bool(samples) and all(s.ok and s.verified for s in samples),
        "verify_errors": verification_problems(samples),
        "repeats": len(samples),
        "errors": sum(known_errors) if known_errors else None,
    }
    if not samples:
        return CellStats(status="missing", reason="no samples recorded", **base)
    failed = [s for s in samples if not s.ok]
    if failed:
        return CellStats(status="failed", reason=failed[0].reason or "no reason recorded", **base)
    per_sample = [sample_metrics(s) for s in samples]
    cpu = [m.server_cpu_us_per_insert for m in per_sample if m.server_cpu_us_per_insert is not None]
    median = median_metrics(per_sample)
    cell_spread = spread(cpu)
    return CellStats(
        status="ok",
        reason=None,
        median=median,
        cpu_min=min(cpu, default=None),
        cpu_max=max(cpu, default=None),
        spread=cell_spread,
        spread_flag=cell_spread is not None and cell_spread > SPREAD_LIMIT,
        inserts_per_core_s=inserts_per_core_s(median.server_cpu_us_per_insert),
        cores_for_10k=cores_needed(median.server_cpu_us_per_insert),
        **base,
    )


def run_cells(run: Run) -> list[CellStats]:
    """Every cell of the run, in planned order."""
    by_cell: dict[CellKey, list[Sample]] = {key: [] for key in run.cells}
    for sample in run.samples:
        by_cell[sample.cell].append(sample)
    return [cell_stats(key, samples) for key, samples in by_cell.items()]


@dataclass(frozen=True)
class Attribution:
    """Where one framework x server's CPU per insert goes, layer by layer (µs per insert, medians)."""

    framework: str
    server: str
    inserts_per_request: int
    http_framework: float | None  # the `none` cell: HTTP parsing, routing, validation, response
    driver: float | None  # asyncpg - none
    sqlalchemy_core: float | None  # core - asyncpg
    orm_session: float | None  # orm - core
    coalescing_saves: float | None  # asyncpg - coalesced

    @property
    def label(self) -> str:
        return f"{self.framework}/{self.server}{bulk_suffix(self.inserts_per_request)}"

    @property
    def layers(self) -> tuple[float | None, ...]:
        return (self.http_framework, self.driver, self.sqlalchemy_core, self.orm_session)


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def attribution(cells: list[CellStats]) -> list[Attribution]:
    """Layer attribution for each framework x server (x inserts per request) that has any of it."""
    cost: dict[tuple[str, str, int], dict[str, float | None]] = {}
    for cell in cells:
        k = cell.key
        layers = cost.setdefault((k.framework, k.server, k.inserts_per_request), {})
        layers[k.db] = cell.us_per_insert if cell.ok else None
    result = []
    for (framework, server, per_request), layers in cost.items():
        row = Attribution(
            framework=framework,
            server=server,
            inserts_per_request=per_request,
            http_framework=layers.get("none"),
            driver=difference(layers.get("asyncpg"), layers.get("none")),
            sqlalchemy_core=difference(layers.get("core"), layers.get("asyncpg")),
            orm_session=difference(layers.get("orm"), layers.get("core")),
            coalescing_saves=difference(layers.get("asyncpg"), layers.get("coalesced")),
        )
        if any(v is not None for v in (*row.layers, row.coalescing_saves)):
            result.append(row)
    return result


def layer_order(cells: Iterable[CellStats | CellKey]) -> list[str]:
    """Database layers present, in display order; unknown layers after, in order of appearance."""
    present = dict.fromkeys(c.key.db if isinstance(c, CellStats) else c.db for c in cells)
    return [db for db in LAYERS if db in present] + [db for db in present if db not in LAYERS]


def preferring(cells: Iterable[CellStats], **wanted: Any) -> list[CellStats]:
    """Cells with those matching `wanted` (key attribute = value, in priority order) first."""
    return sorted(cells, key=lambda c: [getattr(c.key, k) != v for k, v in wanted.items()])


def seed_cell(cells: list[CellStats]) -> CellStats | None:
    """The original app's cell to quote: one with a result first, then uvicorn, then 1 insert per request."""
    seeds = preferring((c for c in cells if c.key.framework == "seed"), server="uvicorn", inserts_per_request=1)
    return min(seeds, key=lambda c: not c.ok, default=None)


def original_stack(cells: list[CellStats]) -> CellStats | None:
    """The seed cell if it has a result, else FastAPI + ORM (the same stack, rewritten) standing in for it."""
    seed = seed_cell(cells)
    if seed is not None and seed.ok:
        return seed
    stand_ins = [c for c in cells if c.ok and (c.key.framework, c.key.db) == ("fastapi", "orm")]
    return next(iter(preferring(stand_ins, server="uvicorn", inserts_per_request=1)), None)


def cheapest_verified(cells: list[CellStats]) -> CellStats | None:
    """The lowest median server CPU per insert among verified cells that use a real database layer."""
    candidates = [c for c in cells if c.ok and c.verified and c.key.db != "none" and c.us_per_insert is not None]
    return min(candidates, key=lambda c: c.us_per_insert, default=None)
