"""The two charts of a run: server CPU per insert for every cell, and where it goes, layer by layer.

Drawn on matplotlib's Agg canvas with no pyplot state, no timestamps and no software tag in the PNG,
so the same run.json always gives the same image.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from harness import axes
from harness.analysis.attribution import Attribution
from harness.analysis.stats import CellStats, layer_order

ONE_CORE_10K_US = 100.0  # 10,000 inserts/s on one core leaves 100 µs per insert
PALETTE = ("#4c72b0", "#dd8452", "#8172b3", "#55a868", "#c44e52", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd")
OTHER_COLOURS = PALETTE[6:]  # for a layer the registry does not name (Django's own, an older run's)
SEGMENTS = (  # attribution: (legend, the layer whose cell the segment ends at)
    ("HTTP + framework (none)", "none"),
    ("+ driver (asyncpg − none)", "asyncpg"),
    ("+ SQLAlchemy Core (core − asyncpg)", "core"),
    ("+ ORM session (orm − core)", "orm"),
)
LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "pad": 0.4, "alpha": 0.85}


def layer_colour(db: str) -> str:
    """A registered layer's colour by its place in the registry; any other layer's from its name."""
    layers = axes.LAYERS
    if db in layers:
        return PALETTE[layers.index(db) % len(PALETTE)]
    return OTHER_COLOURS[sum(map(ord, db)) % len(OTHER_COLOURS)]


def value_label(us: float) -> str:
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def bar_label(cell: CellStats) -> str:
    return cell.key.label + (" †" if cell.imprecise else "") + ("" if cell.verified else " (unverified)")


def new_figure(rows: int, row_height: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(10, 1.8 + row_height * max(rows, 1)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def empty(fig: Figure, ax: Axes, message: str, path: Path) -> Path:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return save(fig, path)


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    return path


def finish_axes(ax: Axes, labels: list[str], right: float) -> None:
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first row on top
    ax.set_xlim(0, right * 1.1)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def not_shown(cells: list[CellStats]) -> str:
    missing = [f"{c.key.label} ({c.status})" for c in cells if not c.ok or c.us_per_insert is None]
    if len(missing) > 3:
        return f"\nnot shown: {len(missing)} failed or missing cells (see matrix.md)"
    return "\nnot shown: " + ", ".join(missing) if missing else ""


def cpu_per_insert_chart(cells: list[CellStats], path: Path) -> Path:
    """Sorted horizontal bars, cheapest on top, min–max whiskers, a line at 100 µs (10k inserts/s/core)."""
    shown = sorted((c for c in cells if c.ok and c.us_per_insert is not None), key=lambda c: c.us_per_insert)
    fig, ax = new_figure(len(shown), 0.26)
    ax.set_title("Server CPU per insert, median of repeats (whiskers: 95% interval of the median)" + not_shown(cells),
                 loc="left", pad=16)
    if not shown:
        return empty(fig, ax, "no successful cells in this run", path)
    medians = [c.us_per_insert for c in shown]
    bounds = [c.ci or (c.cpu_min, c.cpu_max) for c in shown]
    lows = [m - (m if lo is None else lo) for m, (lo, _) in zip(medians, bounds, strict=True)]
    highs = [(m if hi is None else hi) - m for m, (_, hi) in zip(medians, bounds, strict=True)]
    ax.barh(range(len(shown)), medians, color=[layer_colour(c.key.db) for c in shown], height=0.7,
            xerr=[lows, highs], error_kw={"ecolor": "#333333", "capsize": 2, "elinewidth": 0.8})
    right = max(max(m + h for m, h in zip(medians, highs, strict=True)), ONE_CORE_10K_US)
    for i, (m, h) in enumerate(zip(medians, highs, strict=True)):
        ax.text(m + h + right * 0.008, i, value_label(m), va="center", fontsize=8, bbox=LABEL_BOX)
    finish_axes(ax, [bar_label(c) for c in shown], right)
    ax.axvline(ONE_CORE_10K_US, color="black", linestyle="--", linewidth=1)
    ax.text(ONE_CORE_10K_US, 1.0, "10,000 inserts/s per core", transform=blended_transform_factory(
        ax.transData, ax.transAxes), va="bottom", ha="center", fontsize=8)
    ax.set_xlabel("server CPU per insert, µs (user + system of the server process tree) — lower is better")
    handles: list = [Patch(color=layer_colour(db), label=db) for db in layer_order(shown)]
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1,
                          label="100 µs = 10,000 inserts/s per core"))
    ax.legend(handles=handles, title="database layer", loc="upper right", fontsize=9)
    return save(fig, path)


def stop_note(row: Attribution, cells: list[CellStats]) -> str:
    """Why a stacked bar ends before the ORM layer: the next layer's cell failed, is missing or not planned."""
    known = [v is not None for v in row.layers]
    if all(known):
        return ""
    next_layer = SEGMENTS[known.index(False)][1]
    status = {c.key.db: c.status for c in cells
              if (c.key.framework, c.key.server, c.key.inserts_per_request)
              == (row.framework, row.server, row.inserts_per_request)}.get(next_layer)
    return f" ({next_layer} {status})" if status else f" (no {next_layer} cell)"


def attribution_chart(rows: list[Attribution], cells: list[CellStats], path: Path) -> Path:
    """Stacked bars per framework x server: each segment is what one more layer adds per insert."""
    fig, ax = new_figure(len(rows), 0.42)
    ax.set_title("Where server CPU per insert goes, layer by layer (µs, medians)", loc="left")
    if not rows:
        return empty(fig, ax, "no framework × server has the cells attribution needs", path)
    coalesced = {(c.key.framework, c.key.server, c.key.inserts_per_request): c.us_per_insert
                 for c in cells if c.key.db == "coalesced" and c.ok}
    right, drawn, has_marker = 0.0, 0, False
    for i, row in enumerate(rows):
        total = 0.0
        for k, (value, (_, layer)) in enumerate(zip(row.layers, SEGMENTS, strict=True)):
            if value is None:
                break
            ax.barh(i, value, left=total, color=layer_colour(layer), height=0.6)
            total, drawn = total + value, max(drawn, k + 1)
        ax.text(total, i, f"  {value_label(total)}{stop_note(row, cells)}", va="center", fontsize=8)
        marker = coalesced.get((row.framework, row.server, row.inserts_per_request))
        if marker is not None:
            ax.plot(marker, i, marker="D", color="black", markersize=6, linestyle="none")
            has_marker = True
        right = max(right, total * 1.25, marker or 0.0)  # room for the label at the end of the bar
    finish_axes(ax, [r.label for r in rows], right)
    ax.set_xlabel("server CPU per insert, µs — lower is better")
    handles: list = [Patch(color=layer_colour(layer), label=label) for label, layer in SEGMENTS[:drawn]]
    if has_marker:
        handles.append(Line2D([], [], marker="D", color="black", linestyle="none", label="coalesced (total)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return save(fig, path)


def waterfall_chart(ladders: list, path: Path) -> Path:
    """The way down as a waterfall per ladder: the original app's bar, each change's saving floating from the
    level before, the level reached after each change; cores for 10,000 inserts/s on the right axis."""
    fig = Figure(figsize=(10, 1.6 + 3.4 * max(len(ladders), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    if not ladders:
        return empty(fig, fig.add_subplot(), "no ladder: the original app has no verified result in this run", path)
    for index, ladder in enumerate(ladders):
        ax = fig.add_subplot(len(ladders), 1, index + 1)
        rungs = ladder.rungs
        levels = [r.us for r in rungs]
        for i, rung in enumerate(rungs):
            if i == 0:
                ax.bar(i, rung.us, color="#c44e52", width=0.62)
            else:
                ax.bar(i, rung.saving, bottom=rung.us, color="#55a868" if rung.distinct else "#a9d3b5", width=0.62)
                ax.plot([i - 1 - 0.31, i + 0.31], [levels[i - 1]] * 2, color="#555555", linewidth=0.8)
            ax.plot([i - 0.31, i + 0.31], [rung.us] * 2, color="black", linewidth=1.6)
            label = value_label(rung.us) + ("" if i == 0 else f"\n({rung.ratio:.1f}× less)")
            ax.text(i, rung.us + max(levels) * 0.02, label, ha="center", va="bottom", fontsize=8, bbox=LABEL_BOX)
        names = ["original app" if i == 0 else r.change.replace(" → ", "\n→ ").replace(" (", "\n(")
                 for i, r in enumerate(rungs)]
        ax.set_xticks(range(len(rungs)), names, fontsize=7.5)
        ax.set_ylim(0, max(levels) * 1.22)
        ax.set_ylabel("server CPU µs per insert")
        per = "one insert" if ladder.inserts_per_request == 1 else f"{ladder.inserts_per_request} inserts"
        ax.set_title(f"From the original app down, {per} per request (green: the saving of each change; pale: "
                     "within the noise)", loc="left", fontsize=10)
        ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        cores_axis = ax.secondary_yaxis("right", functions=(lambda us: us / ONE_CORE_10K_US,
                                                             lambda c: c * ONE_CORE_10K_US))
        cores_axis.set_ylabel("cores for 10,000 inserts/s")
    return save(fig, path)
