"""``python -m harness compare A B`` (``nox -s compare -- A B``): two runs cell by cell, printed and written to
``results/compare-<A>-vs-<B>.md``. The statistics and the verdicts are ``harness.analysis.compare``'s."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from harness.analysis.compare import (
    ALPHA,
    FASTER,
    INSTRUCTIONS_NOISE,
    SAME,
    SLOWER,
    UNDECIDABLE,
    Row,
    compare,
    samples_needed,
    smallest_p,
)
from harness.analysis.stats import CONFIDENCE
from harness.errors import UsageError
from harness.model import Cell, Run, write_atomically
from harness.report.format import mega, short


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
    undecided = [r for r in rows if r.verdict == UNDECIDABLE]
    if undecided:
        least = min(smallest_p(r.n_a, r.n_b) for r in undecided)
        text += (f", and {UNDECIDABLE} in {len(undecided)}: with as few samples as they have, Mann-Whitney's p "
                 f"cannot go below {least:.3f}, so no move could be called significant at p < {ALPHA}; "
                 f"{samples_needed()} samples per cell in each run could (--repeats {samples_needed()})")
    if geomean is not None:
        text += f"; geometric mean of B/A {geomean:.3f}"
    instr = [r for r in rows if r.instructions_verdict]
    if instr:
        changed = sum(1 for r in instr if r.instructions_verdict != SAME)
        text += (f". Instructions, in the {len(instr)} cells both runs counted: {changed} changed by more than "
                 f"{INSTRUCTIONS_NOISE:.0%}, which needs no rank test (they repeat within a fraction of a percent)")
    return text + "."


def markdown(a: str, b: str, rows: list[Row], only_a: list[Cell], only_b: list[Cell]) -> str:
    header, body = table_rows(rows)
    align = ["---"] + ["---:"] * 5 + ["---"] + ["---:"] * (len(header) - 7)
    lines = [f"# {b} compared with {a}", "", summary(rows), "",
             f"Server CPU per insert, median of each run; B/A with a {CONFIDENCE:.0%} bootstrap interval of the "
             "ratio of medians, and p of Mann-Whitney's U test on the two runs' samples. **faster** or **slower** "
             f"when the interval excludes 1 and p < {ALPHA}, otherwise no significant change, or {UNDECIDABLE} "
             f"where the samples are too few for any p below {ALPHA} ({samples_needed()} per run are needed). "
             "Instructions (callgrind) are compared where both runs counted them; beyond "
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
        return Run.load(directory)
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
