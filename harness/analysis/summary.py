"""Everything the report derives from a run, computed once: the cells' statistics, the ladders, the layer
attribution, the per-request figures, the profile rows and the soak, handed together to every section, table and
chart."""

from __future__ import annotations

from dataclasses import dataclass

from harness.analysis.attribution import Attribution, attribution, instructions_of
from harness.analysis.ladder import Ladder, in_stack_ladders, ladders
from harness.analysis.own import per_request, split
from harness.analysis.profile import cell_profile
from harness.analysis.soak import SoakResult, soak_results
from harness.analysis.stats import CellStats, run_cells
from harness.model import Cell, Run

ProfileRow = tuple[str, str, str, int, str, float, float]  # framework, server, db, ins/req, package, share, µs


@dataclass(frozen=True)
class Analysis:
    """A run and what its report shows."""

    run: Run
    cells: list[CellStats]  # every cell in planned order, a user's app's (--app) included
    matrix: list[CellStats]  # the matrix's cells: without a user's app
    own: list[CellStats]  # a user's app's cells
    ladders: list[Ladder]  # "What to change", from the matrix's cells
    in_stack: list[Ladder]  # its first part: the original app with knobs only
    attribution: list[Attribution]  # CPU µs per insert, layer by layer
    instruction_attribution: list[Attribution]  # the same in instructions per insert
    per_request: dict[Cell, tuple[float | None, float | None]]  # rows and statements per request
    profile_rows: list[ProfileRow]  # every profiled cell's CPU per insert by package
    soak: list[SoakResult]  # every soaked cell (--soak): its windows, memory slope, verdict, CPU drift

    @property
    def leaking(self) -> set[Cell]:
        """The soaked cells whose memory kept growing past the warm-up."""
        return {r.cell for r in self.soak if r.leaking}


def analyse(run: Run) -> Analysis:
    cells = run_cells(run)
    own, matrix = split(cells)
    return Analysis(run=run, cells=cells, matrix=matrix, own=own, ladders=ladders(matrix),
                    in_stack=in_stack_ladders(matrix),
                    attribution=attribution(matrix), instruction_attribution=attribution(matrix, instructions_of),
                    per_request=per_request(run), profile_rows=profile_rows(cells), soak=soak_results(run))


def profile_rows(cells: list[CellStats]) -> list[ProfileRow]:
    """profile.csv's rows: each profiled cell's CPU per insert split by package (user CPU) and the kernel (system).

    The median user and system figures are scaled to the cell's median CPU per insert, so a bar adds up to
    exactly the figure in the grids.
    """
    rows = []
    for c in cells:
        shares = (c.profile or {}).get("profile_shares")
        if not (c.ok and shares) or c.median.user_us_per_insert is None or c.median.system_us_per_insert is None:
            continue
        k = c.key
        user, system = c.median.user_us_per_insert, c.median.system_us_per_insert
        scale = c.us_per_insert / (user + system) if user + system else 1.0  # the medians' split of the median
        rows += [(k.framework, k.server, k.db, k.inserts_per_request, package, share, us) for package, share, us
                 in cell_profile(shares, user * scale, system * scale)]
    return rows
