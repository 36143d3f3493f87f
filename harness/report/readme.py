"""The README's results section: the answer, "What to change" and the grids of one run, between two markers.

Which run it shows is the caller's choice (the newest full run, or the one given with ``--readme``); this module
only writes it.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.analysis.summary import Analysis
from harness.model import write_atomically
from harness.report.answer import headline, what_to_change
from harness.report.matrix import answer, grids

RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"


def update_readme(readme: Path, analysis: Analysis) -> bool:
    """Put this run's answer and grids between the README's results markers. True if the README changed."""
    readme, run_dir = Path(readme), analysis.run.directory
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(RESULTS_START), text.find(RESULTS_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no results section: add a line {RESULTS_START} and, below it, a line "
                         f"{RESULTS_END} where the results should go, then run again.")
    run, cells = analysis.run, analysis.matrix
    link = Path(os.path.relpath(run_dir / "matrix.md", readme.parent)).as_posix()
    steps = what_to_change(analysis.ladders, analysis.in_stack)
    chart = Path(os.path.relpath(run_dir / "what_to_change.png", readme.parent)).as_posix()
    steps = steps.replace("](what_to_change.png)", f"]({chart})") if steps else None
    parts = [headline(analysis.ladders, analysis.in_stack), answer(cells),
             f"### What to change\n\n{steps}" if steps else None,
             "### Server CPU per insert\n\n" + grids(cells)]
    section = ("\n\n".join(p for p in parts if p) + f"\n\nEvery cell, the interpreters, the charts, the layer "
               f"attribution and the environment of run {run.run_id}: [{link}]({link})")
    new = f"{text[: start + len(RESULTS_START)]}\n{section}\n{text[end:]}"
    if new == text:
        return False
    write_atomically(readme, new)
    return True


def newest_run(results_dir: Path) -> Path:
    """The run directory under results_dir with the greatest run id (run ids start with the UTC time)."""
    runs = sorted(p.parent for p in Path(results_dir).glob("*/run.json"))
    if not runs:
        raise FileNotFoundError(f"No run in {results_dir} (no */run.json there): run the benchmark first "
                                "(`nox -s bench`), or pass a run directory.")
    return runs[-1]
