"""Where a framework x server's CPU per insert goes, layer by layer: each layer's cell less the one below it.

`none` is HTTP and the framework alone; `asyncpg` − `none` the driver; `core` − `asyncpg` SQLAlchemy Core;
`orm` − `core` the ORM session; `asyncpg` − `coalesced` what coalescing saves. The same differences serve CPU
µs per insert and instructions per insert. A layer outside that chain is in the grids and charts, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.analysis.stats import CellStats, bulk_suffix


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
    shape: str = "one"

    @property
    def label(self) -> str:
        many = f" {self.shape}" if self.inserts_per_request != 1 else ""
        return f"{self.framework}/{self.server}{bulk_suffix(self.inserts_per_request)}{many}"

    @property
    def layers(self) -> tuple[float | None, ...]:
        return (self.http_framework, self.driver, self.sqlalchemy_core, self.orm_session)


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def cpu_of(cell: CellStats) -> float | None:
    return cell.us_per_insert if cell.ok else None


def instructions_of(cell: CellStats) -> float | None:
    return cell.instructions_per_insert


def attribution(cells: list[CellStats], value: Callable[[CellStats], float | None] = cpu_of) -> list[Attribution]:
    """Layer attribution for each framework x server (x inserts per request) that has any of it.

    ``value`` is what is attributed: CPU µs per insert (the default) or ``instructions_of``.
    """
    cost: dict[tuple[str, str, int, str], dict[str, float | None]] = {}
    for cell in cells:
        k = cell.key
        if k.python or k.shape == "get" or k.knob:
            continue
        layers = cost.setdefault((k.framework, k.server, k.inserts_per_request, k.shape), {})
        layers[k.db] = value(cell)
    result = []
    for (framework, server, per_request, shape), layers in cost.items():
        row = Attribution(
            framework=framework,
            server=server,
            inserts_per_request=per_request,
            shape=shape,
            http_framework=layers.get("none"),
            driver=difference(layers.get("asyncpg"), layers.get("none")),
            sqlalchemy_core=difference(layers.get("core"), layers.get("asyncpg")),
            orm_session=difference(layers.get("orm"), layers.get("core")),
            coalescing_saves=difference(layers.get("asyncpg"), layers.get("coalesced")),
        )
        if any(v is not None for v in (*row.layers, row.coalescing_saves)):
            result.append(row)
    return result
