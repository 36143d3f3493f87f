"""A soak: each chosen cell served by one server for MINUTES, measured in consecutive windows.

``--soak MINUTES --cells framework/server/db[+knob],…`` starts one server per cell, warms it up once, then
measures it window after window (``--duration`` seconds each, 5 by default) for the whole time: each window is
an ordinary sample (``sample.measure`` on the running server, ``kind="soak"``, ``repeat`` its number), with its
CPU per insert, requests/s, latency, errors, the server tree's resident memory at its start and end, and every
row it inserted verified. Between two windows the load generator is started again (its connections too, no
warm-up): a gap of a fraction of a second in which the server idles and nothing is counted. Each window is
written to run.json as it lands, so Ctrl-C keeps the windows done; ``--resume`` soaks a cell whose soak was cut
short again from the start (a soak is one server's life: windows of two servers do not make one), its kept
windows replaced. ``harness.analysis.soak`` reads the windows back: memory slope, verdict, CPU drift.

Without a selection of matrix cells (``--frameworks``, ``--db``…) a soak run measures the soak alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from harness.analysis.soak import soak_result
from harness.analysis.stats import sample_metrics
from harness.axes import KNOBS, SERVERS, SOAK, knob_fits, knob_join, knob_names
from harness.errors import UsageError
from harness.measure.apps import App
from harness.measure.resume import watched, writing
from harness.measure.sample import Context, measure, serving
from harness.measure.servers import ServerError
from harness.model import Cell, Run, Sample
from harness.report.soak import summary_line

DEFAULT_WINDOW = 5.0  # seconds per window when --duration is not given
MIN_WINDOWS = 4  # the warm-up's fifth left out, the memory slope needs three windows more
EXAMPLE = "seed/uvicorn/orm,seed/uvicorn/orm+gcfreeze"
MATRIX_OPTIONS = ("frameworks", "servers", "db", "inserts", "shapes", "python", "knobs", "matrix")


def spelling(cell: Cell) -> str:
    """A cell as --cells names it: framework/server/db[+knob]."""
    return f"{cell.framework}/{cell.server}/{cell.db}" + (f"+{cell.knob}" if cell.knob else "")


def parse_cell(text: str, apps: dict[str, App]) -> Cell:
    """One --cells entry as a cell, or a UsageError that says what is valid."""
    head, _, knobs = text.partition("+")
    parts = head.split("/")
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"--cells {text!r}: a cell is framework/server/db[+knob], e.g. {EXAMPLE}")
    framework, server, db = parts
    if framework not in apps:
        raise UsageError(f"--cells {text}: no app {framework!r}; apps: {', '.join(apps)}")
    app = apps[framework]
    if not app.serves_under(server):
        servers = [s for s in SERVERS if app.serves_under(s)]
        raise UsageError(f"--cells {text}: {framework} is served by {', '.join(servers)}, not {server!r}")
    if db not in app.db_layers:
        raise UsageError(f"--cells {text}: {framework} runs on {', '.join(app.db_layers)}, not {db!r}")
    names = [n for n in knobs.split("+") if n] if knobs else []
    if unknown := [n for n in names if n not in KNOBS]:
        raise UsageError(f"--cells {text}: unknown knob {', '.join(unknown)}; knobs: {', '.join(KNOBS)}")
    if pinned := [n for n in names if KNOBS[n].pins]:
        raise UsageError(f"--cells {text}: a soak serves on this interpreter's packages; knob {pinned[0]} (other "
                         "package versions) is measured by a run of the matrix (--knobs)")
    joined = ""
    for name in names:
        if not knob_fits(joined, name):
            raise UsageError(f"--cells {text}: knob {name} repeats or excludes another of {knobs}")
        joined = knob_join([*knob_names(joined), name])
    if joined and not app.takes(joined, db):
        raise UsageError(f"--cells {text}: knob {joined} does not apply to {framework} on {db}")
    return Cell(framework, server, db, knob=joined)


def alone(args: argparse.Namespace) -> bool:
    """Whether the run is a soak and nothing else (no cells of a matrix chosen beside it)."""
    return getattr(args, "soak", None) is not None and not any(getattr(args, n, None) for n in MATRIX_OPTIONS)


def options(args: argparse.Namespace, apps: dict[str, App]) -> dict:
    """The soak's options (``soak_minutes``, ``soak_window``, ``soak_windows``, ``soak_cells``), empty without it."""
    minutes, cells = getattr(args, "soak", None), getattr(args, "cells", None)
    if minutes is None:
        if cells:
            raise UsageError(f"--cells names the cells of a soak: add --soak MINUTES, e.g. --soak 10 --cells {EXAMPLE}")
        return {}
    if not cells:
        raise UsageError(f"--soak needs the cells to soak: --cells framework/server/db[+knob],…, e.g. --cells "
                         f"{EXAMPLE}")
    chosen = list(dict.fromkeys(parse_cell(text, apps) for text in cells))
    window = DEFAULT_WINDOW if args.duration is None else args.duration
    windows = round(minutes * 60 / window)
    if windows < MIN_WINDOWS:
        raise UsageError(f"--soak {minutes:g} in windows of {window:g} s makes {windows}; the memory slope needs "
                         f"{MIN_WINDOWS} or more: raise --soak to {MIN_WINDOWS * window / 60:.2g} minutes or more, "
                         "or shorten --duration")
    return {"soak_minutes": minutes, "soak_window": window, "soak_windows": windows,
            "soak_cells": [spelling(c) for c in chosen]}


def describe(opts: dict) -> str:
    """The soak as the run's first line announces it ("" without one)."""
    if not opts.get("soak_cells"):
        return ""
    cells = opts["soak_cells"]
    return (f"a soak of {len(cells)} cell{'s' if len(cells) > 1 else ''} ({', '.join(cells)}), "
            f"{opts['soak_minutes']:g} min each in {opts['soak_windows']} windows of {opts['soak_window']:g} s, "
            "one server per cell")


def _todo(run: Run, cells: list[Cell], console: Console) -> list[Cell]:
    """The cells still to soak; a soak cut short (Ctrl-C) is dropped, to be soaked again from the start."""
    todo = []
    for cell in cells:
        done = run.of(cell, SOAK)
        if len(done) >= run.options["soak_windows"] or any(not s.ok and s.window_s is None for s in done):
            continue  # finished, or stopped by a server that died
        if done:
            run.samples[:] = [s for s in run.samples if not (s.cell == cell and s.kind == SOAK)]
            run.save()
            console.print(f"the soak of {spelling(cell)} was cut short after {len(done)} windows: soaking it again "
                          "from the start", highlight=False)
        todo.append(cell)
    return todo


def _line(sample: Sample, windows: int) -> str:
    label = f"soak {spelling(sample.cell)} {sample.repeat + 1}/{windows}"
    if sample.window_s is None:
        return f"[red]✗ {label}: {escape((sample.reason or '').splitlines()[0][:160] if sample.reason else '')}[/red]"
    m = sample_metrics(sample)
    figures = [f"{m.server_cpu_us_per_insert:,.1f} µs/insert" if m.server_cpu_us_per_insert else "n/a",
               f"{m.rps:,.0f} req/s" if m.rps is not None else "", f"p99 {m.p99_ms:.1f} ms" if m.p99_ms else "",
               f"{sample.errors or 0} errors", f"{m.server_rss_end_mib:.1f} MiB" if m.server_rss_end_mib else ""]
    mark = "✓" if sample.ok else "[yellow]![/yellow]"
    return f"{mark} {label}: " + ", ".join(f for f in figures if f)


def _soak_cell(cell: Cell, run: Run, ctx: Context, progress: Progress, task: object) -> None:
    """One cell's soak: one server, then ``soak_windows`` windows on it, each saved as it lands."""
    opts, windows = run.options, run.options["soak_windows"]
    first = dataclasses.replace(ctx, options=ctx.options | {"duration": opts["soak_window"]})
    later = dataclasses.replace(first, options=first.options | {"warmup": 0.0})  # warm once, for the whole soak
    try:
        with serving(cell, ctx) as server:
            up = time.monotonic()
            for i in range(windows):
                progress.update(task, description=f"soak {spelling(cell)} window {i + 1}/{windows}")
                sample = watched(run, ctx.database, f"soak window {i + 1} of {spelling(cell)}",
                                 functools.partial(measure, cell, i, len(run.samples), first if i == 0 else later,
                                                   SOAK, running=server))
                extra = (sample.extra or {}) | {"soak_elapsed_s": round(time.monotonic() - up, 3)}
                with writing(run):
                    run.add(dataclasses.replace(sample, extra=extra))
                progress.console.print(_line(sample, windows), highlight=False)
                progress.advance(task)
                if not server.alive():
                    progress.advance(task, windows - i - 1)
                    return
    except ServerError as exc:  # it did not come up: the soak has one failed window that says why
        run.add(Sample(cell=cell, repeat=0, kind=SOAK, status="failed", reason=str(exc)))
        progress.console.print(_line(run.samples[-1], windows), highlight=False)
        progress.advance(task, windows)


def soak(run: Run, ctx: Context, console: Console) -> None:
    """Every --cells cell's soak in turn, under one progress bar; nothing without --soak."""
    if not run.options.get("soak_cells"):
        return
    cells = [parse_cell(text, ctx.apps) for text in run.options["soak_cells"]]
    todo, windows = _todo(run, cells, console), run.options["soak_windows"]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("soak", total=windows * len(todo))
        for cell in todo:
            _soak_cell(cell, run, ctx, progress, task)
            result = soak_result(cell, run.of(cell, SOAK), windows)
            progress.console.print(summary_line(result), highlight=False, markup=False)
