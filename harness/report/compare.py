"""Two runs compared cell by cell: did B get faster, slower, or did nothing measurable change?

For each cell both runs measured, the ratio of B's median CPU per insert to A's, with a 95% bootstrap
interval (the samples of each run resampled independently, scipy's ``bootstrap``), and a verdict the way
``pyperf compare_to`` and Go's benchstat give one: **faster** when the whole interval lies below 1,
**slower** when it lies above, **no significant change** when it holds 1 or when Mann-Whitney's U test
on the two sets of samples does not reach p < 0.05 (small samples make bootstrap intervals too narrow).
Where both runs counted instructions (``--instructions``), their ratio too: instruction counts repeat
within a fraction of a percent, so a change beyond ``INSTRUCTIONS_NOISE`` is called real.

``python -m harness compare A B`` (``nox -s compare -- A B``) prints the table and writes it to
``results/compare-<A>-vs-<B>.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scipy import stats as scipy_stats

from harness.analysis.stats import CONFIDENCE, CellStats, Run, load_run, ratio_ci, run_cells, sample_metrics
from harness.errors import UsageError
from harness.model import Cell, write_atomically
from harness.report.matrix import mega, short

ALPHA = 0.05
INSTRUCTIONS_NOISE = 0.01  # instruction counts of one cell repeat within 0.3% here; beyond 1% is a change
FASTER, SLOWER, SAME = "faster", "slower", "no significant change"


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
    return Row(cell, a.us_per_insert, b.us_per_insert, ratio, ci, verdict(ci, p), p=p, **instructions)


def compare(run_a: Run, run_b: Run) -> tuple[list[Row], list[Cell], list[Cell]]:
    """Rows for the cells both runs have (in A's order), then the cells only A and only B have."""
    stats_a = {c.key: c for c in run_cells(run_a)}
    stats_b = {c.key: c for c in run_cells(run_b)}
    rows = [_row(cell, run_a, stats_a[cell], run_b, stats_b[cell]) for cell in stats_a if cell in stats_b]
    return rows, [c for c in stats_a if c not in stats_b], [c for c in stats_b if c not in stats_a]


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _interval(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3f}–{ci[1]:.3f}]"


def table_rows(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    header = ["cell", "A µs/insert", "B µs/insert", "B/A", f"{CONFIDENCE:.0%} interval", "p", "verdict"]
    with_instructions = any(r.instructions_verdict for r in rows)
    if with_instructions:
        header += ["A instr/insert", "B instr/insert", "B/A instr", "instructions"]
    body = []
    for r in rows:
        line = [r.cell.label, short(r.a), short(r.b), _ratio(r.ratio), _interval(r.ci),
                "n/a" if r.p is None else f"{r.p:.3f}", r.verdict]
        if with_instructions:
            line += [mega(r.a_instructions), mega(r.b_instructions), _ratio(r.instructions_ratio),
                     r.instructions_verdict or "—"]
        body.append(line)
    return header, body


def summary(rows: list[Row]) -> str:
    counts = {v: sum(1 for r in rows if r.verdict == v) for v in (FASTER, SLOWER, SAME)}
    ratios = [r.ratio for r in rows if r.ratio]
    geomean = math.exp(sum(math.log(x) for x in ratios) / len(ratios)) if ratios else None
    text = (f"{len(rows)} cells in both runs: B is {FASTER} in {counts[FASTER]}, {SLOWER} in {counts[SLOWER]}, "
            f"with {SAME} in {counts[SAME]}")
    if geomean is not None:
        text += f"; geometric mean of B/A {geomean:.3f}"
    instr = [r for r in rows if r.instructions_verdict]
    if instr:
        changed = sum(1 for r in instr if r.instructions_verdict != SAME)
        text += (f". Instructions, in the {len(instr)} cells both runs counted: {changed} changed by more than "
                 f"{INSTRUCTIONS_NOISE:.0%}")
    return text + "."


def markdown(a: str, b: str, rows: list[Row], only_a: list[Cell], only_b: list[Cell]) -> str:
    header, body = table_rows(rows)
    align = ["---"] + ["---:"] * 5 + ["---"] + ["---:"] * (len(header) - 7)
    lines = [f"# {b} compared with {a}", "", summary(rows), "",
             f"Server CPU per insert, median of each run; B/A with a {CONFIDENCE:.0%} bootstrap interval of the "
             "ratio of medians, and p of Mann-Whitney's U test on the two runs' samples. **faster** or **slower** "
             f"when the interval excludes 1 and p < {ALPHA}, otherwise no significant change (3 samples against "
             "3 can never reach it). Instructions (callgrind) are compared where both runs counted them; beyond "
             f"{INSTRUCTIONS_NOISE:.0%} a change is real.", "",
             "| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(row)) + " |" for row in body]
    for name, cells in (("A", only_a), ("B", only_b)):
        if cells:
            lines += ["", f"Only in {name}: " + ", ".join(f"`{c.label}`" for c in cells) + "."]
    return "\n".join(lines) + "\n"


def terminal(rows: list[Row]) -> str:
    header, body = table_rows(rows)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Iterable[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 6, 10) else c.rjust(w) for i, (c, w) in
                         enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)])


def _load(results: Path, run_id: str) -> Run:
    directory = results / run_id
    if not (directory / "run.json").is_file():
        found = sorted(p.parent.name for p in results.glob("*/run.json")) or ["none"]
        raise UsageError(f"no run {run_id!r} in {results}; runs there: {', '.join(found)}")
    try:
        return load_run(directory)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def main(results: Path, a: str, b: str) -> int:
    run_a, run_b = _load(results, a), _load(results, b)
    rows, only_a, only_b = compare(run_a, run_b)
    if not rows:
        raise UsageError(f"runs {a} and {b} have no cell in common; nothing to compare")
    out = results / f"compare-{a}-vs-{b}.md"
    write_atomically(out, markdown(a, b, rows, only_a, only_b))
    print(terminal(rows))
    print()
    print(summary(rows))
    print(f"wrote {out}")
    return 0
