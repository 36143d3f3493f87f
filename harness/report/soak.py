"""The soak's part of a run's report: the "Soak" section of matrix.md, soak.csv (every window) and soak.png (the
server's memory and CPU per insert over the requests served, one line per cell), and one line per soaked cell for
the terminal. From ``analysis.soak``'s results alone."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis.soak import LEAK_MIB_PER_100K, PER, SoakResult, SoakWindow, fifth
from harness.analysis.summary import Analysis
from harness.model import write_atomically
from harness.report.charts import PALETTE, save
from harness.report.format import count, md_text, short, table

TITLE = "Soak"
CSV_COLUMNS = ["framework", "server", "db", "knob", "window", "elapsed_s", "requests_total", "window_s", "requests",
               "errors", "inserts", "server_cpu_us_per_insert", "rps", "p50_ms", "p99_ms", "server_rss_start_mib",
               "server_rss_end_mib", "ok", "verified"]


def _slope(r: SoakResult) -> str:
    if r.slope is None:
        return "n/a"
    return f"{r.slope.per_100k:+.2f} [{r.slope.low:+.2f}, {r.slope.high:+.2f}]"


def _drift(r: SoakResult) -> str:
    if r.drift is None:
        return "n/a"
    interval = f" [{r.drift.low:.2f}–{r.drift.high:.2f}]" if r.drift.low is not None else ""
    return f"{r.drift.ratio:.2f}×{interval}"


def _pair(first: float | None, last: float | None, fmt=short) -> str:
    return f"{fmt(first)} → {fmt(last)}"


def _rss(r: SoakResult) -> str:
    start = next((w.metrics.server_rss_warm_mib for w in r.windows if w.metrics.server_rss_warm_mib), None)
    end = next((w.metrics.server_rss_end_mib for w in reversed(r.windows) if w.metrics.server_rss_end_mib), None)
    return _pair(start, end, lambda x: "n/a" if x is None else f"{x:.1f}")


def _windows(r: SoakResult) -> str:
    if r.complete:
        return str(len(r.windows))
    return f"{len(r.windows)} of {r.planned} (cut short{': ' + md_text(r.reason, 120) if r.reason else ''})"


def _verdict(r: SoakResult) -> str:
    return f"**{r.verdict}**" if r.leaking else r.verdict


def section(analysis: Analysis) -> str | None:
    """The Soak section: how it was measured, a table of every soaked cell, the chart; None without a soak."""
    results, opts = analysis.soak, analysis.run.options
    if not results:
        return None
    header = ["cell", "windows", "µs/insert first → last fifth", "drift [95%]", "req/s first → last",
              "p99 ms first → last", "errors", "verified", "server MiB start → end",
              "MiB per 100k requests [95%]", "verdict"]
    rows = []
    for r in results:
        f, last = r.first, r.last
        rows.append([f"`{r.cell.label}`", _windows(r),
                     _pair(f and f.server_cpu_us_per_insert, last and last.server_cpu_us_per_insert), _drift(r),
                     _pair(f and f.rps, last and last.rps, count), _pair(f and f.p99_ms, last and last.p99_ms),
                     count(r.errors), "yes" if r.verified else "**no**", _rss(r), _slope(r), _verdict(r)])
    minutes = f"{opts['soak_minutes']:g} min" if opts.get("soak_minutes") else "the soak's time"
    window = f" of {opts['soak_window']:g} s" if opts.get("soak_window") else ""
    intro = (f"Each cell here was served by one server for {minutes}, measured in consecutive windows{window} (the "
             "load generator started again between two, a fraction of a second apart, the server warmed up once), "
             "every row verified. First and last fifth: the medians of the first and the last fifth of the windows. "
             "Memory: the server tree's resident memory at each window's end against the requests served so far, "
             "past the first fifth (the warm-up), fitted by the Theil–Sen estimator (scipy's `theilslopes`) with its "
             f"95% interval, in MiB per {PER:,} requests. A cell is **leaking** when the whole interval lies above "
             f"{LEAK_MIB_PER_100K:g} MiB per {PER:,} requests, steady when it lies at or below it, unclear when it "
             "holds it (a longer soak would tell). Drift: the last fifth's median CPU per insert over the first "
             "fifth's, with a 95% bootstrap interval (from 2 windows a side).")
    return (intro + "\n\n" + table(header, rows, "ll" + "r" * (len(header) - 3) + "l")
            + "\n\n![Server memory and CPU per insert over the soak](soak.png)\n\nEvery window: `soak.csv`.")


def summary_line(r: SoakResult) -> str:
    """One soaked cell on one line, for the terminal."""
    cpu = _pair(r.first and r.first.server_cpu_us_per_insert, r.last and r.last.server_cpu_us_per_insert)
    return (f"soak {r.cell.label}: {_windows(r)} windows, server MiB {_rss(r)}, {_slope(r)} MiB per {PER:,} "
            f"requests: {r.verdict}; µs/insert first → last fifth {cpu} ({_drift(r)}), {r.errors} errors, "
            f"{'verified' if r.verified else 'NOT verified'}")


def csv_text(results: list[SoakResult]) -> str:
    """soak.csv: one row per window of every soaked cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def fmt(x: float | None, spec: str) -> str:
        return "" if x is None else format(x, spec)

    for r in results:
        c = r.cell
        for w in r.windows:
            m = w.metrics
            writer.writerow([c.framework, c.server, c.db, c.knob, w.index, fmt(w.elapsed_s, ".3f"), w.requests_total,
                             fmt(w.window_s, ".3f"), w.requests, w.errors, "" if w.inserts is None else w.inserts,
                             fmt(m.server_cpu_us_per_insert, ".1f"), fmt(m.rps, ".1f"), fmt(m.p50_ms, ".3f"),
                             fmt(m.p99_ms, ".3f"), fmt(m.server_rss_warm_mib, ".2f"), fmt(m.server_rss_end_mib, ".2f"),
                             str(w.ok).lower(), str(w.verified).lower()])
    return out.getvalue()


def _minutes(w: SoakWindow) -> float | None:
    return None if w.elapsed_s is None else w.elapsed_s / 60


def chart(results: list[SoakResult], path: Path) -> Path:
    """Two panels over the soak's minutes, a line per cell: how far the server tree's resident memory has grown since
    the end of its warm-up, and CPU per insert over the cell's first fifth. Both relative, so a cheap cell and a dear
    one share the axes, and time rather than requests, so every cell spans the chart."""
    fig = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(fig)
    memory, cpu = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    for i, r in enumerate(results):
        colour = PALETTE[i % len(PALETTE)]
        shown = [w for w in r.windows if w.metrics.server_rss_end_mib is not None and _minutes(w) is not None]
        if not shown:
            continue
        start = shown[0].metrics.server_rss_warm_mib or shown[0].metrics.server_rss_end_mib
        slope = f"{r.slope.per_100k:+.2f} MiB per 100k requests, " if r.slope else ""
        memory.plot([0.0] + [_minutes(w) for w in shown], [0.0] + [w.metrics.server_rss_end_mib - start for w in shown],
                    marker="o", markersize=2, color=colour, linestyle="--" if r.leaking else "-",
                    label=f"{r.cell.label}: {start:,.0f} MiB at start, {slope}{r.verdict}")
        base = r.first.server_cpu_us_per_insert if r.first else None
        timed = [w for w in shown if w.metrics.server_cpu_us_per_insert is not None]
        if base:
            cpu.plot([_minutes(w) for w in timed], [w.metrics.server_cpu_us_per_insert / base for w in timed],
                     marker="o", markersize=2, linewidth=0.8, color=colour,
                     label=f"{r.cell.label} (first fifth: {base:,.1f} µs per insert)")
        if len(shown) > fifth(len(shown)):
            memory.axvline(_minutes(shown[fifth(len(shown)) - 1]), color=colour, linewidth=0.6, linestyle=":")
    memory.set_title("Server memory grown since the end of the warm-up (dotted: the end of the first fifth, which the "
                     "slope leaves out; dashed: leaking)", loc="left", fontsize=10)
    memory.set_ylabel("server tree RSS growth, MiB")
    cpu.set_title("Server CPU per insert, window by window, over the cell's first fifth", loc="left", fontsize=10)
    cpu.set_ylabel("× the first fifth's median")
    cpu.axhline(1.0, color="#888888", linewidth=0.6)
    cpu.set_xlabel("minutes into the soak")
    for ax in (memory, cpu):
        ax.grid(color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlim(left=0)
        if ax.lines:
            ax.legend(fontsize=8, loc="upper left")
    top = max((max(line.get_ydata()) for line in memory.lines if len(line.get_ydata())), default=1.0)
    memory.set_ylim(bottom=min(0.0, memory.get_ylim()[0]), top=max(1.0, top * 1.3))  # 1 MiB at least: flat is flat
    cpu.set_ylim(bottom=0)
    return save(fig, path)


def files(analysis: Analysis) -> list[Path]:
    """soak.csv and soak.png in the run's folder, when the run soaked any cell."""
    if not analysis.soak:
        return []
    directory = analysis.run.directory
    write_atomically(directory / "soak.csv", csv_text(analysis.soak))
    return [directory / "soak.csv", chart(analysis.soak, directory / "soak.png")]
