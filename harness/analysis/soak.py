"""A soak's windows read back: does the server's memory keep growing, does its CPU per insert drift?

A soak (``--soak MINUTES``) serves one cell from one server for the whole time and measures it in consecutive
windows (``kind="soak"`` samples, ``repeat`` the window's number). Two questions, each answered past the warm-up,
the first fifth of the windows being left out of the memory figure:

- **memory**: the slope of the server tree's resident memory (MiB) against the requests served so far, per
  100,000 requests, by the Theil–Sen estimator (scipy's ``theilslopes``: the median of the pairwise slopes, which
  a few odd windows do not move) with its 95% interval. A cell is **leaking** when the whole interval lies above
  ``LEAK_MIB_PER_100K``; **steady** when the interval's top is at or below it; **unclear** when the interval
  holds the threshold (a longer soak would tell).
- **CPU drift**: the median CPU per insert of the last fifth of the windows over that of the first fifth, with a
  95% bootstrap interval of that ratio (``stats.ratio_ci``) and Mann-Whitney's p (``compare.rank_test``).

Pure functions of the windows: no clock, no process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

from harness.analysis.compare import rank_test
from harness.analysis.stats import CONFIDENCE, Metrics, median_metrics, median_or_none, ratio_ci, sample_metrics
from harness.axes import SOAK
from harness.model import Cell, Run, Sample

LEAK_MIB_PER_100K = 1.0  # a cell leaks when the whole 95% interval of its RSS slope lies above this
PER = 100_000  # requests the slope is stated per
LEAKING, STEADY, UNCLEAR, TOO_FEW = "leaking", "steady", "unclear", "too few windows"
MIN_SLOPE_WINDOWS = 3  # past the warm-up, the fewest windows a slope is fitted to


@dataclass(frozen=True)
class Slope:
    """MiB of resident memory per 100,000 requests, and its 95% interval."""

    per_100k: float
    low: float
    high: float


@dataclass(frozen=True)
class Drift:
    """Median CPU per insert of the last fifth of the windows over the first fifth's."""

    ratio: float
    low: float | None  # 95% bootstrap interval of the ratio (None with fewer than 2 windows a side)
    high: float | None
    p: float | None  # Mann-Whitney U, two-sided


@dataclass(frozen=True)
class SoakWindow:
    """One window's figures, as the report shows them."""

    index: int
    elapsed_s: float | None  # since the soak's server answered its health check, at the window's end
    requests_total: int  # requests served by the end of this window, the soak's earlier windows included
    requests: int  # in this window
    inserts: int | None
    window_s: float | None
    metrics: Metrics
    errors: int
    ok: bool
    verified: bool


@dataclass(frozen=True)
class SoakResult:
    """A soaked cell: its windows, its memory slope and verdict, its CPU drift."""

    cell: Cell
    windows: list[SoakWindow]
    planned: int | None  # windows the soak was to have (None: not recorded)
    slope: Slope | None
    verdict: str
    drift: Drift | None
    first: Metrics | None  # medians of the first fifth of the windows
    last: Metrics | None  # and of the last fifth
    reason: str | None  # why the soak stopped early (a failed window's reason)

    @property
    def verified(self) -> bool:
        return bool(self.windows) and all(w.ok and w.verified for w in self.windows)

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.windows)

    @property
    def complete(self) -> bool:
        return self.planned is None or len(self.windows) >= self.planned

    @property
    def leaking(self) -> bool:
        return self.verdict == LEAKING


def fifth(n: int) -> int:
    """How many windows a fifth of ``n`` is: at least one."""
    return max(1, n // 5)


def rss_slope(requests: Sequence[float], rss_mib: Sequence[float]) -> Slope | None:
    """Theil–Sen slope of ``rss_mib`` against ``requests`` (served so far), per 100,000 requests, with its 95%
    interval; None with fewer than ``MIN_SLOPE_WINDOWS`` points or all at the same request count."""
    if len(requests) < MIN_SLOPE_WINDOWS or len(requests) != len(rss_mib) or len(set(requests)) < 2:
        return None
    x = [r / PER for r in requests]
    slope, _, low, high = scipy_stats.theilslopes(rss_mib, x, alpha=CONFIDENCE)
    return Slope(float(slope), float(low), float(high))


def verdict(slope: Slope | None, threshold: float = LEAK_MIB_PER_100K) -> str:
    """leaking (the whole interval above ``threshold``), steady (its top at or below), unclear (it holds it)."""
    if slope is None:
        return TOO_FEW
    if slope.low > threshold:
        return LEAKING
    return STEADY if slope.high <= threshold else UNCLEAR


def drift(first: Sequence[float], last: Sequence[float]) -> Drift | None:
    """median(last) / median(first), with a bootstrap interval and the rank test's p where each side has 2 values."""
    before, after = median_or_none(first), median_or_none(last)
    if not before or after is None:
        return None
    ci = ratio_ci(first, last)
    p = rank_test(list(first), list(last))
    return Drift(after / before, ci[0] if ci else None, ci[1] if ci else None, None if p is None or math.isnan(p)
                 else p)


def windows_of(samples: Sequence[Sample]) -> list[SoakWindow]:
    """A soak's samples as windows, in order, with the requests served so far at each one's end."""
    served, windows = 0, []
    for s in sorted(samples, key=lambda s: s.repeat):
        served += s.requests or 0
        windows.append(SoakWindow(index=s.repeat, elapsed_s=(s.extra or {}).get("soak_elapsed_s"),
                                  requests_total=served, requests=s.requests or 0, inserts=s.inserts,
                                  window_s=s.window_s, metrics=sample_metrics(s), errors=s.errors or 0, ok=s.ok,
                                  verified=s.verified))
    return windows


def _medians(windows: Sequence[SoakWindow]) -> Metrics | None:
    return median_metrics([w.metrics for w in windows]) if windows else None


def soak_result(cell: Cell, samples: Sequence[Sample], planned: int | None = None) -> SoakResult:
    """Everything the report says of one soaked cell, from its windows."""
    windows = windows_of(samples)
    good = [w for w in windows if w.window_s is not None]  # measured (a window with errors too), not cut short
    reason = next((s.reason for s in samples if s.window_s is None), None)
    k = fifth(len(good))
    past = good[k:] if len(good) > k else []
    points = [(w.requests_total, w.metrics.server_rss_end_mib) for w in past if w.metrics.server_rss_end_mib]
    slope = rss_slope([p[0] for p in points], [p[1] for p in points])
    cpu = [w.metrics.server_cpu_us_per_insert for w in good]
    first = [v for v in cpu[:k] if v is not None]
    last = [v for v in cpu[-k:] if v is not None] if len(good) > k else []
    return SoakResult(cell=cell, windows=windows, planned=planned, slope=slope, verdict=verdict(slope),
                      drift=drift(first, last) if last else None, first=_medians(good[:k]),
                      last=_medians(good[-k:]) if len(good) > k else None, reason=reason)


def soak_results(run: Run) -> list[SoakResult]:
    """Every soaked cell of the run, in the order the soak measured them."""
    cells = list(dict.fromkeys(s.cell for s in run.samples if s.kind == SOAK))
    planned = run.options.get("soak_windows")
    return [soak_result(c, run.of(c, SOAK), planned) for c in cells]
