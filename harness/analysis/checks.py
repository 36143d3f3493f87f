"""The question's comparisons beside the ladders, and the cross-checks that make the figures believable: pure
functions of a run's cells. ``interpreters`` sets each cell served by another Python beside the same cell on the
baseline's; ``knobs`` each knob's cell beside the cell without it; ``body_reads`` the bare app's GET form (no
body) beside its POST form, per server; ``busy_cores``, ``waited``, ``loadgen_margin``, ``floor_gaps`` and
``statements`` are the cross-checks.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from harness.analysis.ladder import INTERFACE_BARE, _overlap, _usable
from harness.analysis.stats import CellStats
from harness.axes import FLOOR


@dataclass(frozen=True)
class Versus:
    """One cell on another interpreter (or in another form) beside its baseline."""

    cell: CellStats
    baseline: CellStats

    @property
    def ratio(self) -> float:
        return self.cell.us_per_insert / self.baseline.us_per_insert

    @property
    def distinct(self) -> bool:
        return not _overlap(self.cell, self.baseline)


def interpreters(cells: list[CellStats], baseline: str = "") -> list[Versus]:
    """Every cell served by another interpreter, beside the same cell on the baseline interpreter."""
    by_key = _usable(cells)
    return [Versus(c, by_key[c.key.but(python=baseline)]) for k, c in by_key.items()
            if k.python != baseline and k.but(python=baseline) in by_key]


def knobs(cells: list[CellStats]) -> list[Versus]:
    """Every cell with a knob, beside the same cell without it."""
    by_key = _usable(cells)
    return [Versus(c, by_key[k.but(knob="")]) for k, c in by_key.items()
            if k.knob and "+" not in k.knob and k.but(knob="") in by_key]


def body_reads(cells: list[CellStats]) -> list[Versus]:
    """The GET form (nothing to read) beside the POST form (a 20-odd-byte JSON body), per server."""
    by_key = _usable(cells)
    return [Versus(by_key[k.but(shape="one")], c) for k, c in by_key.items()
            if k.shape == "get" and not k.knob and k.but(shape="one") in by_key]


def busy_cores(cells: list[CellStats]) -> list[float]:
    """CPU per request × requests per second for each cell: the share of its core the server kept busy."""
    return sorted(c.median.server_cpu_us_per_request * c.median.rps / 1e6 for c in cells
                  if c.ok and c.median.server_cpu_us_per_request and c.median.rps)


WAITED = 0.8  # a server that kept less of its core busy than this waited for something


def waited(cells: list[CellStats], below: float = WAITED) -> list[tuple[CellStats, float]]:
    """The cells whose server kept less than ``below`` of its core busy, with the share it did."""
    return [(c, c.median.server_cpu_us_per_request * c.median.rps / 1e6) for c in cells
            if c.ok and c.median.server_cpu_us_per_request and c.median.rps
            and c.median.server_cpu_us_per_request * c.median.rps / 1e6 < below]


AHEAD = 2.0  # the load generator should spend at most half the server's CPU per request


@dataclass(frozen=True)
class Margin:
    """The load generator beside the servers: in the cheapest server's cell, at the floor, and where it was close."""

    fastest: CellStats  # the cell whose server needed least CPU per request (the floor apart)
    loadgen_us: float  # the generator's CPU per request in that cell
    floor: CellStats | None  # the floor's cell, where the generator runs flat out
    close: tuple[tuple[CellStats, float], ...]  # cells where the server spent less than AHEAD × the generator's


def loadgen_margin(cells: list[CellStats]) -> Margin | None:
    """The load generator's CPU per request in the cheapest server's own cell, at the floor, and every cell where
    the server spent less than ``AHEAD`` times what the generator spent on the same requests."""
    ok = [c for c in cells if c.ok and c.median.server_cpu_us_per_request and c.median.loadgen_cpu_us_per_request]
    servers = [c for c in ok if c.key.framework != FLOOR]
    if not servers:
        return None
    fastest = min(servers, key=lambda c: c.median.server_cpu_us_per_request)
    floor = next((c for c in ok if c.key.framework == FLOOR), None)
    close = tuple((c, c.median.server_cpu_us_per_request / c.median.loadgen_cpu_us_per_request) for c in servers
                  if c.median.server_cpu_us_per_request < AHEAD * c.median.loadgen_cpu_us_per_request)
    return Margin(fastest, fastest.median.loadgen_cpu_us_per_request, floor, close)


def floor_gaps(cells: list[CellStats]) -> tuple[CellStats, list[tuple[CellStats, float]]] | None:
    """The floor's cell, and every server × interface's bare cell (no database) with its CPU per request above
    the floor's."""
    usable = [c for c in cells if c.ok and c.median.server_cpu_us_per_request and not c.key.python and not c.key.knob]
    floor = next((c for c in usable if c.key.framework == FLOOR), None)
    if floor is None:
        return None
    bare = [c for c in usable if c.key.db == "none" and c.key.framework in INTERFACE_BARE]
    here = floor.median.server_cpu_us_per_request
    return floor, [(c, c.median.server_cpu_us_per_request - here) for c in
                   sorted(bare, key=lambda c: c.median.server_cpu_us_per_request)]


def statements(cells: list[CellStats]) -> dict[tuple[str, int, str], float]:
    """Median statements per insert of each layer × inserts per request × shape, over frameworks and servers."""
    found: dict[tuple[str, int, str], list[float]] = {}
    for c in cells:
        if c.ok and c.key.db != "none" and not c.key.python and c.key.shape != "get" \
                and c.median.statements_per_insert is not None:
            found.setdefault((c.key.db, c.key.inserts_per_request, c.key.shape), []).append(
                c.median.statements_per_insert)
    return {k: statistics.median(v) for k, v in found.items()}
