"""Where the CPU goes, for a reader: profiled cells' CPU by package as CSV, a chart and a Markdown section.

A row is ``(framework, server, db, inserts_per_request, package, share, us_per_insert, inclusive_share,
inclusive_us_per_insert)``: one package of one cell, as ``_profile.cell_profile`` gives them, so a cell's
shares sum to 1 and its µs to its CPU per insert; and, beside them, the share and µs of the cell's CPU that
runs under the package (its frames and everything they call, ``_profile.cell_inclusive``), which overlap.
A package found on stacks but never innermost has a row with share 0. Runs from before the inclusive shares
were recorded leave those two empty (None). Everything here is a pure function of the rows; the chart is
drawn like ``_charts``' (Agg canvas, no pyplot state, no timestamp or software tag), so the same rows give
the same bytes.

Every package keeps one colour: a distribution's comes from its name (a hash into tab10, moved to the next
free colour only when two named packages of one chart collide), the kernel and "other" are greys.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from harness.analysis.profile import KERNEL, OTHER, cell_inclusive
from harness.analysis.stats import seed_cell
from harness.analysis.summary import Analysis
from harness.axes import OWN_DB
from harness.model import Cell, write_atomically
from harness.report.charts import finish_axes, save, value_label
from harness.report.format import md_text

HEADER = ("framework", "server", "db", "inserts_per_request", "package", "share", "us_per_insert", "inclusive_share",
          "inclusive_us_per_insert")
INNERMOST_HEADER = HEADER[:7]  # profile.csv before the inclusive shares
Row = tuple[str, str, str, int, str, float, float, float | None, float | None]
NONE = "—"  # where a run recorded no inclusive shares
FIXED_COLOURS = {KERNEL: "#595959", OTHER: "#d0d0d0"}
STRONG = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
LIGHT = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
         "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")  # tab10 (no grey), then tab20's light half, tab20b
NAMED_SHARE = 0.04  # a package is named in the chart if it has this share of some cell
MAX_NAMED = 14
TOP = 5  # packages per cell in the table, and in the sentence about the original app


def with_inclusive(rows: Iterable[Sequence], inclusive: Mapping[Cell, Mapping[str, float]]) -> list[Row]:
    """Analysis's rows ``(framework, server, db, inserts_per_request, package, share, µs)`` with each package's
    inclusive share and µs from ``inclusive`` (cell of four coordinates -> package -> share; a cell missing
    from it gets None), and a row of share 0 for each package that is only ever on the stack, after its cell's."""
    done: list[Row] = []
    cells: dict[Cell, list[tuple]] = {}
    for row in rows:
        cells.setdefault(Cell(*row[:4]), []).append(tuple(row[:7]))
    for cell, parts in cells.items():
        under, total = inclusive.get(cell), sum(row[6] for row in parts)
        if under is None:
            done += [(*row, None, None) for row in parts]
            continue
        innermost = {row[4] for row in parts}
        done += [(*row, under.get(row[4], row[5]), under.get(row[4], row[5]) * total) for row in parts]
        done += [(cell.framework, cell.server, cell.db, cell.inserts_per_request, package, 0.0, 0.0, share,
                  share * total) for package, share in under.items() if package not in innermost]
    return done


def analysis_rows(analysis: Analysis) -> list[Row]:
    """The analysis's profile rows with their inclusive shares (``_profile.cell_inclusive``)."""
    inclusive: dict[Cell, dict[str, float]] = {}
    for c in analysis.cells:
        found = cell_inclusive(c)
        if found is not None:
            inclusive.setdefault(Cell(c.key.framework, c.key.server, c.key.db, c.key.inserts_per_request), found)
    return with_inclusive(analysis.profile_rows, inclusive)


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def profile_csv(rows: Iterable[Row]) -> str:
    """The rows as CSV, with a header; no inclusive share is an empty field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for fw, server, db, n, package, share, us, inclusive, inclusive_us in rows:
        writer.writerow([fw, server, db, n, package, f"{share:.6f}", f"{us:.3f}", _number(inclusive, 6),
                         _number(inclusive_us, 3)])
    return out.getvalue()


def read_profile_csv(text: str) -> list[Row]:
    """Rows back from ``profile_csv``'s text (or an older profile.csv's, without the inclusive columns)."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) not in (HEADER, INNERMOST_HEADER):
        raise ValueError(f"not a profile CSV: its header is {reader.fieldnames}, expected {','.join(HEADER)}")

    def number(field: str | None) -> float | None:
        return float(field) if field else None

    return [(r["framework"], r["server"], r["db"], int(r["inserts_per_request"]), r["package"], float(r["share"]),
             float(r["us_per_insert"]), number(r.get("inclusive_share")), number(r.get("inclusive_us_per_insert")))
            for r in reader]


def by_cell(rows: Iterable[Row]) -> dict[Cell, dict[str, float]]:
    """Cell -> package -> µs per insert, cells in the rows' order, packages largest first."""
    cells: dict[Cell, dict[str, float]] = {}
    for fw, server, db, n, package, _, us, *_ in rows:
        parts = cells.setdefault(Cell(fw, server, db, n), {})
        parts[package] = parts.get(package, 0.0) + us
    return {cell: dict(sorted(parts.items(), key=lambda p: (-p[1], p[0]))) for cell, parts in cells.items()}


def inclusive_by_cell(rows: Iterable[Row]) -> dict[Cell, dict[str, float]]:
    """Cell -> package -> inclusive share, for the cells whose rows have them."""
    cells: dict[Cell, dict[str, float]] = {}
    for fw, server, db, n, package, _, _, inclusive, _ in rows:
        if inclusive is not None:
            cells.setdefault(Cell(fw, server, db, n), {})[package] = inclusive
    return cells


def named_packages(cells: dict[Cell, dict[str, float]]) -> list[str]:
    """The packages a chart names, largest first (by their shares summed over the cells, so a package big in
    cheap cells counts as much as one big in dear ones); the kernel always; the rest fold into "other"."""
    totals: dict[str, float] = {}
    for parts in cells.values():
        for package, us in parts.items():
            totals[package] = totals.get(package, 0.0) + us / sum(parts.values())
    big = {p for parts in cells.values() for p, us in parts.items() if us >= NAMED_SHARE * sum(parts.values())}
    ranked = sorted((p for p in totals if p in big | {KERNEL} and p != OTHER), key=lambda p: (-totals[p], p))
    named = ranked[:MAX_NAMED] if KERNEL in ranked[:MAX_NAMED] else [*ranked[:MAX_NAMED - 1], KERNEL]
    return [p for p in ranked if p in named]


def package_colours(packages: Sequence[str]) -> dict[str, str]:
    """A colour per package: fixed greys for the kernel and "other"; for the rest, tab10's colour that the
    name hashes to, or the next free one (then lighter ones once tab10's nine are taken)."""
    colours, used = {}, set()
    for package in packages:
        if package in FIXED_COLOURS:
            colours[package] = FIXED_COLOURS[package]
            continue
        start = zlib.crc32(package.encode()) % len(STRONG)
        candidates = [*(STRONG[(start + k) % len(STRONG)] for k in range(len(STRONG))), *LIGHT]
        colours[package] = next((c for c in candidates if c not in used), candidates[0])
        used.add(colours[package])
    return colours


def _dark(colour: str) -> bool:
    red, green, blue = (int(colour[k: k + 2], 16) / 255 for k in (1, 3, 5))
    return 0.299 * red + 0.587 * green + 0.114 * blue < 0.5


def _folded(parts: dict[str, float], named: list[str]) -> dict[str, float]:
    folded = {p: parts.get(p, 0.0) for p in named}
    folded[OTHER] = sum(us for p, us in parts.items() if p not in named)
    return folded


def profile_chart(rows: Iterable[Row], path: Path) -> Path:
    """Per cell, one stacked bar of its CPU per insert by package (left) and the same as shares (right),
    packages in the same order and colours in every bar."""
    cells = by_cell(rows)
    fig = Figure(figsize=(13, 1.9 + 0.4 * max(len(cells), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    if not cells:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no profiled cells in this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return save(fig, path)
    absolute, shares = fig.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    fig.suptitle("Where server CPU per insert goes, by package: py-spy's shares of user CPU, system CPU as kernel",
                 x=0.01, ha="left")
    named = named_packages(cells)
    colours = package_colours([*named, OTHER])
    right = max(sum(parts.values()) for parts in cells.values())
    for i, parts in enumerate(cells.values()):
        folded, total = _folded(parts, named), sum(parts.values())
        _stack(absolute, i, folded, colours, lambda us: value_label(us) if us >= 0.07 * right else "")
        _stack(shares, i, {p: us / total for p, us in folded.items()}, colours,
               lambda share: f"{share:.0%}" if share >= 0.08 else "")
        absolute.text(total, i, f"  {value_label(total)}", va="center", fontsize=8)
    finish_axes(absolute, [cell.label for cell in cells], right * 1.08)
    absolute.set_xlabel("µs per insert: each bar adds up to the cell's measured CPU per insert")
    shares.set_xlim(0, 1)
    shares.xaxis.set_major_formatter(PercentFormatter(1.0))
    shares.set_xlabel("share of the cell's CPU per insert")
    shares.grid(axis="x", color="#dddddd", linewidth=0.6)
    shares.set_axisbelow(True)
    shown = [p for p in [*named, OTHER] if any(_folded(parts, named)[p] > 0 for parts in cells.values())]
    shares.legend(handles=[Patch(color=colours[p], label=p) for p in shown], title="package", loc="upper left",
                  bbox_to_anchor=(1.02, 1.0), fontsize=9)
    return save(fig, path)


def _stack(ax: Axes, row: int, parts: dict[str, float], colours: dict[str, str], label: Callable) -> None:
    left = 0.0
    for package, value in parts.items():
        if value > 0:
            ax.barh(row, value, left=left, color=colours[package], height=0.62, edgecolor="white", linewidth=0.4)
            ax.text(left + value / 2, row, label(value), ha="center", va="center", fontsize=7,
                    color="white" if _dark(colours[package]) else "black")
            left += value


def _top(parts: dict[str, float], k: int = TOP) -> str:
    return " · ".join(f"{package} {value_label(us)}" for package, us in list(parts.items())[:k])


def _top_inclusive(parts: dict[str, float], under: dict[str, float] | None, k: int = TOP) -> str:
    """The inclusive shares of the same packages as ``_top``'s, or "—" for a cell without them."""
    if under is None:
        return NONE
    return " · ".join(f"{package} {under.get(package, 0.0):.0%}" for package in list(parts)[:k])


def _seed_sentence(cells: dict[Cell, dict[str, float]], inclusive: dict[Cell, dict[str, float]],
                   seed_label: str | None) -> str:
    seeds = [c for c in cells if c.framework == "seed"]
    seed = next((c for c in seeds if c.label == seed_label), seeds[0] if seeds and seed_label is None else None)
    if seed is None:
        return ""
    parts = cells[seed]
    total = sum(parts.values())
    listed = ", ".join(f"{package} {value_label(us)} µs ({us / total:.0%})"
                       for package, us in list(parts.items())[:TOP])
    sentence = (f"The original app (`{seed.label}`, {value_label(total)} µs per insert) spends most of it in "
                f"{listed}.")
    under = inclusive.get(seed)
    if under:
        named = [p for p in list(parts)[:TOP] if p != KERNEL]
        shares = ", ".join(f"{under.get(p, 0.0):.0%} under {p}" for p in named)
        sentence += f" Counting everything their frames call, {shares}."
    return sentence + "\n\n"


def profile_section(rows: Iterable[Row], seed_label: str | None = None) -> str:
    """Markdown "Where the CPU goes": the chart, a sentence on the original app, a table of top packages with
    their inclusive shares.

    ``seed_label`` is the label of the seed cell to describe (``seed/uvicorn/orm``); None takes the first
    seed cell of the rows.
    """
    rows = list(rows)
    cells, inclusive = by_cell(rows), inclusive_by_cell(rows)
    if not cells:
        return ""
    lines = ["| cell | µs per insert | top packages, µs per insert | the same packages, inclusive |",
             "| --- | ---: | --- | --- |"]
    lines += [f"| {cell.label} | {value_label(sum(parts.values()))} | {_top(parts)} | "
              f"{_top_inclusive(parts, inclusive.get(cell))} |" for cell, parts in cells.items()]
    return ("## Where the CPU goes\n\n"
            "One extra window per cell ran with py-spy attached to the server's processes (native frames "
            "included). Each sample went to the package owning its innermost frame; the shares split the "
            "cell's user CPU per insert, and its system CPU is the kernel's part, so each bar adds up to the "
            "cell's CPU per insert. The last column counts a sample once for every package with a frame on "
            "its stack, and the system calls made under a package as its: the share of the cell's CPU that runs "
            "under the package (its code and all it calls), at least its innermost share; the shares overlap "
            f"(profile.csv has every package's; {NONE} where the run predates them). "
            "Flame graphs: `profiles/*.speedscope.json` (open in https://www.speedscope.app).\n\n"
            "![CPU by package](profile.png)\n\n"
            + _seed_sentence(cells, inclusive, seed_label) + "\n".join(lines) + "\n")


def profile_part(analysis: Analysis) -> str | None:
    """The section "Where the CPU goes", with what the profiler cost and where it could not attach."""
    cells, rows = analysis.cells, analysis_rows(analysis)
    profiled = [c for c in cells if c.profile]
    if not profiled:
        return None
    seed = seed_cell(cells)
    text = profile_section(rows, seed.key.label if seed is not None and seed.ok else None).rstrip()
    if not text:
        text = "## Where the CPU goes\n\nNo cell could be profiled in this run."
    overhead = sorted(c.profile["cpu_us_per_insert"] / c.us_per_insert for c in profiled
                      if c.ok and c.us_per_insert and c.profile.get("cpu_us_per_insert")
                      and c.profile.get("profile_shares"))
    if overhead:
        text += ("\n\nWhat the profiler costs: with py-spy attached, a cell's CPU per insert was "
                 f"{overhead[len(overhead) // 2]:.2f}× its median without it (median over {len(overhead)} cells; "
                 f"{overhead[0]:.2f}–{overhead[-1]:.2f}×), which is why the shares are applied to the cells' own "
                 "CPU samples, not to the profiled window's.")
    errors = [f"- `{c.key.label}`: {md_text(c.profile['profile_error'])}" for c in profiled
              if c.profile.get("profile_error")]
    if errors:
        text += "\n\nNot profiled:\n\n" + "\n".join(errors)
    return text


def profile_files(analysis: Analysis) -> list[Path]:
    """profile.csv and profile.png for the matrix's profiled cells (none when no cell was profiled)."""
    rows = [row for row in analysis_rows(analysis) if row[2] != OWN_DB]
    if not rows:
        return []
    directory = analysis.run.directory
    write_atomically(directory / "profile.csv", profile_csv(rows))
    return [directory / "profile.csv", profile_chart(rows, directory / "profile.png")]
