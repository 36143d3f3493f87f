"""Two runs compared cell by cell: did B get faster, slower, or did nothing measurable change?

For each cell both runs measured, the ratio of B's median CPU per insert to A's, with a 95% bootstrap
interval (the samples of each run resampled independently, scipy's ``bootstrap``), and a verdict the way
``pyperf compare_to`` and Go's benchstat give one: **faster** when the whole interval lies below 1,
**slower** when it lies above, **no significant change** when it holds 1 or when Mann-Whitney's U test
on the two sets of samples does not reach p < 0.05 (small samples make bootstrap intervals too narrow).
Where both runs counted instructions (``--instructions``), their ratio too: instruction counts repeat
within a fraction of a percent, so a change beyond ``INSTRUCTIONS_NOISE`` is called real.

``harness.report.compare`` prints and writes the table (``python -m harness compare A B``, ``nox -s compare``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as scipy_stats

from harness.analysis.stats import CellStats, ratio_ci, run_cells, sample_metrics
from harness.model import Cell, Run

ALPHA = 0.05
INSTRUCTIONS_NOISE = 0.01  # instruction counts of one cell repeat within 0.3% here; beyond 1% is a change
FASTER, SLOWER, SAME = "faster", "slower", "no significant change"
UNDECIDABLE = "cannot tell"  # too few samples for the rank test ever to reach ALPHA


@dataclass(frozen=True)
class Row:
    """One cell of the comparison."""

    cell: Cell
    a: float | None  # median µs per insert
    b: float | None
    ratio: float | None  # b / a
    ci: tuple[float, float] | None
    verdict: str
    p: float | None = None  # Mann-Whitney U, two-sided
    n_a: int = 0  # CPU samples of each run
    n_b: int = 0
    a_instructions: float | None = None
    b_instructions: float | None = None
    instructions_verdict: str | None = None

    @property
    def instructions_ratio(self) -> float | None:
        if self.a_instructions and self.b_instructions:
            return self.b_instructions / self.a_instructions
        return None


def verdict(ci: tuple[float, float] | None, p: float | None = 0.0) -> str:
    """faster / slower when the interval of B ÷ A excludes 1 and the rank test agrees, else no significant change.

    With the 4-6 samples a cell gets, a percentile bootstrap interval is too narrow: two full runs of the
    same commit, 17 minutes apart, gave 7 of 42 cells an interval without 1, where chance alone would give
    about 2. So a change must also pass Mann-Whitney's U test (two-sided, p < ``ALPHA``), as benchstat asks;
    3 samples against 3 can never pass it (its smallest p is 0.1), and the verdict says so.
    """
    if ci is None:
        return "too few samples"
    if p is None or p >= ALPHA:
        return SAME
    if ci[1] < 1:
        return FASTER
    if ci[0] > 1:
        return SLOWER
    return SAME


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p Mann-Whitney's exact test can give ``n_a`` samples against ``n_b``: all of one
    run below all of the other, 2 of the C(n_a + n_b, n_a) orderings."""
    return min(1.0, 2 / math.comb(n_a + n_b, n_a))


def samples_needed(alpha: float = ALPHA) -> int:
    """The fewest samples per run (the same in both) with which the rank test can reach ``alpha``."""
    n = 2
    while smallest_p(n, n) >= alpha:
        n += 1
    return n


def rank_test(a: list[float], b: list[float]) -> float | None:
    """Mann-Whitney U's two-sided p that A's and B's samples come from one distribution (scipy)."""
    if len(a) < 2 or len(b) < 2:
        return None
    return float(scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)


def instructions_verdict(a: float | None, b: float | None, noise: float = INSTRUCTIONS_NOISE) -> str | None:
    if not a or not b:
        return None
    change = b / a - 1
    return FASTER if change < -noise else SLOWER if change > noise else SAME


def cpu_values(run: Run, cell: Cell) -> list[float]:
    """The CPU per insert of each successful CPU sample of ``cell``."""
    values = (sample_metrics(s).server_cpu_us_per_insert for s in run.samples
              if s.cell == cell and s.kind == "cpu" and s.ok)
    return [v for v in values if v is not None]


def _row(cell: Cell, run_a: Run, a: CellStats, run_b: Run, b: CellStats) -> Row:
    instructions = {"a_instructions": a.instructions_per_insert, "b_instructions": b.instructions_per_insert,
                    "instructions_verdict": instructions_verdict(a.instructions_per_insert,
                                                                 b.instructions_per_insert)}
    if not (a.ok and b.ok):
        which = " and ".join(name for name, stats in (("A", a), ("B", b)) if not stats.ok)
        return Row(cell, a.us_per_insert, b.us_per_insert, None, None, f"not comparable ({which} {'failed'})",
                   **instructions)
    before, after = cpu_values(run_a, cell), cpu_values(run_b, cell)
    ci, p = ratio_ci(before, after), rank_test(before, after)
    ratio = b.us_per_insert / a.us_per_insert if a.us_per_insert else None
    decided = verdict(ci, p)
    if decided == SAME and ci is not None and smallest_p(len(before), len(after)) >= ALPHA:
        decided = UNDECIDABLE  # no outcome of these samples could have been significant
    return Row(cell, a.us_per_insert, b.us_per_insert, ratio, ci, decided, p=p, n_a=len(before), n_b=len(after),
               **instructions)


def compare(run_a: Run, run_b: Run) -> tuple[list[Row], list[Cell], list[Cell]]:
    """Rows for the cells both runs have (in A's order), then the cells only A and only B have."""
    stats_a = {c.key: c for c in run_cells(run_a)}
    stats_b = {c.key: c for c in run_cells(run_b)}
    rows = [_row(cell, run_a, stats_a[cell], run_b, stats_b[cell]) for cell in stats_a if cell in stats_b]
    return rows, [c for c in stats_a if c not in stats_b], [c for c in stats_b if c not in stats_a]


