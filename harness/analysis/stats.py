"""From raw samples to the figures a reader sees: server CPU per insert, and what it is made of.

The quantity insertbench measures is **server CPU per insert**: the growth in user + system CPU time of
the server process and all its descendants over one measured window, divided by the rows inserted in
that window as counted in the database (for the `none` layer: items the server acknowledged). CPU time,
not wall time, because the question is how many cores a given insert rate needs; rows counted in the
database, not requests sent, so an endpoint that answers without inserting cannot look cheap.

Each cell (framework x server x database layer x inserts per request) is measured in several repeats,
interleaved with the other cells. A cell's figure is the median of its repeats, shown with a 95%
bootstrap confidence interval of that median (scipy); a cell whose interval is wider than the run's
precision target is flagged, and cells whose intervals overlap cannot be told apart in this run. A cell
with any failed repeat is failed as a whole: a number from the repeats that happened to succeed would be
a number nobody should quote.

A cell's callgrind window (``--instructions``), when there is one, gives its instructions per insert:
user-space instructions of the whole server tree, which repeat within a fraction of a percent where CPU
time moves by ten.

Everything here is a pure function of run.json, so re-rendering a run reproduces its report exactly. Where the
CPU goes layer by layer is ``attribution``'s.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from harness import axes
from harness.axes import FLOOR
from harness.model import DEFAULT_PRECISION, Run, Sample
from harness.model import Cell as CellKey

CONFIDENCE = 0.95
RESAMPLES = 9999
SEED = 20261126  # the bootstrap's resampling is seeded, so a run renders the same every time
TARGET_INSERTS_PER_S = 10_000


def bulk_suffix(inserts_per_request: int) -> str:
    return f" ×{inserts_per_request}" if inserts_per_request != 1 else ""


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
    instructions_per_insert: float | None = None  # callgrind windows only; the cyclic GC's lumps apart
    instructions_per_request: float | None = None
    gc_instructions_per_insert: float | None = None
    rows_per_statement: float | None = None
    server_rss_warm_mib: float | None = None  # the server tree's resident memory, MiB
    server_rss_end_mib: float | None = None


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


def without_gc(sample: Sample) -> int | None:
    """A callgrind window's instructions less the cyclic garbage collector's, when those could be told apart.

    A full collection walks the whole heap in one lump (14-30M instructions) every few hundred to few
    thousand requests, so whether a window holds one moves its total by 5-10%; without it the count
    repeats within a fraction of a percent. The collector's share is reported beside it.
    """
    if sample.instructions is None:
        return None
    return sample.instructions - (sample.gc_instructions or 0)


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
        p50_ms=(sample.latency_ms or {}).get("p50"),
        p99_ms=(sample.latency_ms or {}).get("p99"),
        handler_cpu_us_per_request=ms_to_us(sample.handler_cpu_ms_mean),
        handler_wall_us_per_request=ms_to_us(sample.handler_wall_ms_mean),
        instructions_per_insert=ratio(without_gc(sample), sample.inserts),
        instructions_per_request=ratio(without_gc(sample), sample.requests_ok),
        gc_instructions_per_insert=ratio(sample.gc_instructions, sample.inserts),
        rows_per_statement=ratio(sample.inserts, sample.statements),
        server_rss_warm_mib=sample.server_rss_warm_mib,
        server_rss_end_mib=sample.server_rss_end_mib,
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


def median_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """A bootstrap confidence interval of the median (scipy, percentile method, seeded); None below 2 values.

    With few samples the percentile bootstrap of a median lands on order statistics: with 3 it is the
    min–max, with 7 about the 2nd lowest to the 2nd highest. It says honestly how little 3 samples pin down.
    """
    if len(values) < 2:
        return None
    if min(values) == max(values):
        return float(values[0]), float(values[0])
    result = scipy_stats.bootstrap((np.asarray(values, dtype=float),), np.median, confidence_level=confidence,
                                   n_resamples=RESAMPLES, method="percentile", vectorized=True,
                                   rng=np.random.default_rng(SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def ratio_ci(before: Sequence[float], after: Sequence[float],
             confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """A bootstrap interval of median(after) / median(before), the two resampled independently."""
    if len(before) < 2 or len(after) < 2:
        return None

    def median_ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(b, axis=axis) / np.median(a, axis=axis)

    data = (np.asarray(before, dtype=float), np.asarray(after, dtype=float))
    result = scipy_stats.bootstrap(data, median_ratio, confidence_level=confidence, n_resamples=RESAMPLES,
                                   method="percentile", vectorized=True, paired=False,
                                   rng=np.random.default_rng(SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def half_width(ci: tuple[float, float] | None, centre: float | None) -> float | None:
    """An interval's half-width relative to its centre: ±0.05 is ±5%."""
    if ci is None or not centre:
        return None
    return (ci[1] - ci[0]) / 2 / centre


def common_groups(intervals: Mapping[Any, tuple[float, float] | None]) -> dict[Any, str]:
    """Letters marking cells that cannot be told apart: cells sharing a letter have intervals with a common point.

    Cells are sorted by the middle of their interval; each maximal run of neighbours whose intervals all
    share a point (for intervals, pairwise overlap is the same thing) gets a letter, a, b, c… A cell alone
    gets none. Cells without an interval are left out.
    """
    known = sorted(((k, ci) for k, ci in intervals.items() if ci is not None), key=lambda kv: sum(kv[1]))
    runs: list[tuple[int, int]] = []
    for i in range(len(known)):
        j, low, high = i, known[i][1][0], known[i][1][1]
        while j + 1 < len(known) and max(low, known[j + 1][1][0]) <= min(high, known[j + 1][1][1]):
            j += 1
            low, high = max(low, known[j][1][0]), min(high, known[j][1][1])
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    letters: dict[Any, str] = {}
    for n, (i, j) in enumerate(runs):
        for key, _ in known[i:j + 1]:
            letters[key] = letters.get(key, "") + "abcdefghijklmnopqrstuvwxyz"[n % 26]
    return letters


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
    ci_low: float | None = None  # 95% bootstrap interval of the median CPU per insert
    ci_high: float | None = None
    precision: float | None = None  # the interval's half-width over the median
    imprecise: bool = False  # wider than the run's target, or too few samples for an interval
    inserts_per_core_s: float | None = None
    cores_for_10k: float | None = None
    instructions: Metrics | None = None  # the callgrind window's figures, when the run counted them
    instructions_reason: str | None = None  # why a callgrind window has no figure
    machine: Mapping[str, float] | None = None  # steal and iowait ticks summed over the cell's windows
    profile: Mapping[str, Any] | None = None  # the profiled window: shares by package, flame graph, its own CPU

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def us_per_insert(self) -> float | None:
        return self.median.server_cpu_us_per_insert if self.median else None

    @property
    def ci(self) -> tuple[float, float] | None:
        return None if self.ci_low is None or self.ci_high is None else (self.ci_low, self.ci_high)

    @property
    def instructions_per_insert(self) -> float | None:
        return self.instructions.instructions_per_insert if self.instructions else None


def verification_problems(samples: list[Sample]) -> tuple[str, ...]:
    """Each repeat's verification errors (a failed repeat is reported by its reason instead)."""
    problems: list[str] = []
    for s in samples:
        errors = s.verify_errors or (() if s.verified or not s.ok else ("not verified",))
        problems += [f"repeat {s.repeat}: {e}" for e in errors]
    return tuple(dict.fromkeys(problems))


def machine_totals(samples: Iterable[Sample]) -> dict[str, float] | None:
    """Steal and iowait ticks over every window of a cell, and the highest load average seen."""
    records = [s.machine for s in samples if s.machine]
    if not records:
        return None
    totals = {k: sum(r.get(k, 0) for r in records) for k in ("ticks", "steal_ticks", "iowait_ticks")}
    loads = [r["loadavg_1m"] for r in records if "loadavg_1m" in r]
    return totals | ({"loadavg_1m_max": max(loads)} if loads else {})


def instruction_figures(samples: list[Sample]) -> tuple[Metrics | None, str | None]:
    """The medians of a cell's callgrind windows, or why it has none."""
    if not samples:
        return None, None
    good = [s for s in samples if s.ok and s.instructions is not None]
    if not good:
        return None, next((s.reason for s in samples if s.reason), "no instruction count recorded")
    return median_metrics([sample_metrics(s) for s in good]), None


def profile_of(samples: list[Sample]) -> dict[str, Any] | None:
    """What a cell's profiled window found (``_profile.ProfileProbe``), with that window's CPU per insert."""
    if not samples:
        return None
    sample = samples[-1]
    found = dict(sample.extra or {})
    if not sample.ok:
        found.setdefault("profile_error", sample.reason or "the profiled window failed")
    found["cpu_us_per_insert"] = sample_metrics(sample).server_cpu_us_per_insert if sample.ok else None
    return found


def cell_stats(key: CellKey, samples: list[Sample], precision: float = DEFAULT_PRECISION) -> CellStats:
    """Aggregate the samples of one cell: its CPU windows give the figures, a callgrind window its instructions."""
    cpu_samples = [s for s in samples if s.kind == "cpu"]
    instructions, instructions_reason = instruction_figures([s for s in samples if s.kind == "instructions"])
    known_errors = [s.errors for s in cpu_samples if s.errors is not None]
    base = {
        "key": key,
        "verified": bool(cpu_samples) and all(s.ok and s.verified for s in cpu_samples),
        "verify_errors": verification_problems(cpu_samples),
        "repeats": len(cpu_samples),
        "errors": sum(known_errors) if known_errors else None,
        "instructions": instructions,
        "instructions_reason": instructions_reason,
        "machine": machine_totals(cpu_samples),
        "profile": profile_of([s for s in samples if s.kind == "profile"]),
    }
    if not cpu_samples:
        return CellStats(status="missing", reason="no samples recorded", **base)
    failed = [s for s in cpu_samples if not s.ok]
    if failed:
        return CellStats(status="failed", reason=failed[0].reason or "no reason recorded", **base)
    per_sample = [sample_metrics(s) for s in cpu_samples]
    cpu = [m.server_cpu_us_per_insert for m in per_sample if m.server_cpu_us_per_insert is not None]
    median = median_metrics(per_sample)
    ci = median_ci(cpu)
    relative = half_width(ci, median.server_cpu_us_per_insert)
    return CellStats(
        status="ok",
        reason=None,
        median=median,
        cpu_min=min(cpu, default=None),
        cpu_max=max(cpu, default=None),
        spread=spread(cpu),
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        precision=relative,
        imprecise=relative is None or relative > precision,
        inserts_per_core_s=inserts_per_core_s(median.server_cpu_us_per_insert),
        cores_for_10k=cores_needed(median.server_cpu_us_per_insert),
        **base,
    )


def run_cells(run: Run) -> list[CellStats]:
    """Every cell of the run, in planned order."""
    by_cell: dict[CellKey, list[Sample]] = {key: [] for key in run.every_cell}
    for sample in run.samples:
        if sample.cell in by_cell:  # a cell only soaked is not one of them (``Run.every_cell``)
            by_cell[sample.cell].append(sample)
    return [cell_stats(key, samples, run.precision) for key, samples in by_cell.items()]


def layer_order(cells: Iterable[CellStats | CellKey]) -> list[str]:
    """Database layers present, in display order; unknown layers after, in order of appearance."""
    present = dict.fromkeys(c.key.db if isinstance(c, CellStats) else c.db for c in cells)
    layers = axes.LAYERS  # the registry's order; others follow, as found
    return [db for db in layers if db in present] + [db for db in present if db not in layers]


def preferring(cells: Iterable[CellStats], **wanted: Any) -> list[CellStats]:
    """Cells with those matching `wanted` (key attribute = value, in priority order) first."""
    return sorted(cells, key=lambda c: [getattr(c.key, k) != v for k, v in wanted.items()])


def main_cells(cells: Iterable[CellStats]) -> list[CellStats]:
    """The matrix proper: the run's own interpreter, POST forms, the code as written (no GET form, no other
    Python, no knob), the floor apart (it is read against the bare cells, not beside the frameworks)."""
    return [c for c in cells if not c.key.python and c.key.shape != "get" and not c.key.knob
            and c.key.framework != FLOOR]


def seed_cell(cells: list[CellStats]) -> CellStats | None:
    """The original app's cell to quote: one with a result first, then uvicorn, then 1 insert per request."""
    seeds = preferring((c for c in main_cells(cells) if c.key.framework == "seed"), server="uvicorn",
                       inserts_per_request=1)
    return min(seeds, key=lambda c: not c.ok, default=None)


def original_stack(cells: list[CellStats]) -> CellStats | None:
    """The seed cell if it has a result, else FastAPI + ORM (the same stack, rewritten) standing in for it."""
    seed = seed_cell(cells)
    if seed is not None and seed.ok:
        return seed
    stand_ins = [c for c in main_cells(cells) if c.ok and (c.key.framework, c.key.db) == ("fastapi", "orm")]
    return next(iter(preferring(stand_ins, server="uvicorn", inserts_per_request=1)), None)


def cheapest_verified(cells: list[CellStats]) -> CellStats | None:
    """The lowest median server CPU per insert among verified cells that use a real database layer."""
    candidates = [c for c in main_cells(cells) if c.ok and c.verified and c.key.db != "none"
                  and c.key.shape == "one" and c.us_per_insert is not None]
    return min(candidates, key=lambda c: c.us_per_insert, default=None)
