"""Orchestration of a run: choose the cells, start PostgreSQL, measure samples interleaved, render.

Repeats are interleaved (A B C, A B C) with a fresh server for every sample, so slow drift of a shared
machine spreads over every cell instead of landing on one. The server gets its own core(s), the load
generator, PostgreSQL and the harness the others. Each sample is written to run.json as soon as it is
measured; Ctrl-C (or SIGTERM) stops the server, the load and PostgreSQL, keeps every finished sample,
and says how to resume.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from harness._apps import LAYERS, App, discover
from harness._bench import Cell, Run, new_run_id, sample_key
from harness._errors import UsageError
from harness._metadata import _git, collect, python_build, python_summary, unoptimized
from harness._postgres import Database, embedded, existing, redact
from harness._sample import Context, measure
from harness._servers import SERVERS

DEFAULTS = {"repeats": 3, "duration": 3.0, "warmup": 1.0, "concurrency": 64, "workers": 1}
QUICK = {"repeats": 1, "duration": 1.0, "warmup": 0.5}


def _choose(kind: str, asked: list[str] | None, valid: list[str]) -> list[str]:
    if not asked:
        return list(valid)
    unknown = [name for name in asked if name not in valid]
    if unknown:
        raise UsageError(f"unknown {kind} {', '.join(unknown)}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(asked))


def resolve_options(args: argparse.Namespace, apps: dict[str, App]) -> dict:
    """The run's options: what was asked, the --quick or usual defaults for the rest."""
    defaults = DEFAULTS | (QUICK if args.quick else {})
    options = {
        "frameworks": _choose("framework", args.frameworks, list(apps)),
        "servers": _choose("server", args.servers, list(SERVERS)),
        "db": _choose("database layer", args.db, list(LAYERS)),
        "inserts": args.inserts or [1],
        "rate": args.rate,
        "quick": args.quick,
        "durable": args.durable,
        "dsn": redact(args.dsn) if args.dsn else None,
    }
    for name, default in defaults.items():
        value = getattr(args, name)
        options[name] = default if value is None else value
    if options["warmup"] < 0:
        raise UsageError("--warmup takes seconds, 0 or more")
    return options


def plan(options: dict, apps: dict[str, App]) -> list[Cell]:
    """Every asked combination an app supports; the others (the seed beyond `orm`) are skipped."""
    cells = [Cell(f, s, db, n) for f in options["frameworks"] for s in options["servers"]
             for db in options["db"] for n in options["inserts"] if apps[f].supports(db, n)]
    if not cells:
        supported = ", ".join(f"{a.name}: {'/'.join(a.db_layers)}" for a in apps.values())
        raise UsageError(f"nothing to run: no chosen framework supports the chosen layers ({supported})")
    return cells


def split_cpus(workers: int) -> tuple[set[int] | None, set[int] | None]:
    """The server's cores (the last ``workers``, leaving one) and everything else's."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    count = min(workers, len(cpus) - 1)
    return set(cpus[-count:]), set(cpus[:-count])


@contextlib.contextmanager
def _database(options: dict, dsn: str | None, cpus: set[int] | None) -> Iterator[Database]:
    if dsn:
        yield existing(dsn)
    else:
        with embedded(durable=options["durable"], cpus=cpus) as db:
            yield db


def _prepare_run(args: argparse.Namespace, apps: dict[str, App]) -> Run:
    if args.resume:
        directory = args.results / args.resume
        if not (directory / "run.json").is_file():
            found = sorted(p.parent.name for p in args.results.glob("*/run.json")) or ["none"]
            raise UsageError(f"no run {args.resume!r} in {args.results}; runs there: {', '.join(found)}")
        run = Run.load(directory)
        missing = sorted({c.framework for c in run.cells} - set(apps))
        if missing:
            raise UsageError(f"run {args.resume} needs apps that are gone from apps/: {', '.join(missing)}")
        if run.options.get("dsn") and not args.dsn:
            raise UsageError(f"run {args.resume} used --dsn {run.options['dsn']}: pass --dsn again to resume it")
        return run
    options = resolve_options(args, apps)
    run_id = new_run_id(_git("rev-parse", "HEAD"))
    return Run(run_id=run_id, directory=args.results / run_id, options=options, cells=plan(options, apps))


def _todo(run: Run) -> list[tuple[Cell, int]]:
    done = run.done()
    return [(cell, repeat) for repeat in range(run.options["repeats"]) for cell in run.cells
            if sample_key({"repeat": repeat, **cell.__dict__}) not in done]


def _line(sample: dict) -> str:
    label = f"{sample['framework']}/{sample['server']}/{sample['db']}"
    if sample["inserts_per_request"] > 1:
        label += f" ×{sample['inserts_per_request']}"
    if sample["status"] != "ok":
        reason = (sample["reason"] or "").splitlines()[0][:160]
        return f"[red]✗ {label} #{sample['repeat'] + 1}: {reason}[/red]"
    cpu = (sample["server_cpu_user_s"] + sample["server_cpu_system_s"]) * 1e6
    per_insert = cpu / sample["inserts"] if sample["inserts"] else float("nan")
    rps = sample["requests_ok"] / sample["window_s"]
    return f"✓ {label} #{sample['repeat'] + 1}: {per_insert:,.1f} µs/insert, {rps:,.0f} req/s"


def _measure_all(run: Run, todo: list[tuple[Cell, int]], ctx: Context, console: Console) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=len(todo))
        for cell, repeat in todo:
            progress.update(task, description=f"{cell.label} #{repeat + 1}")
            sample = measure(cell, repeat, len(run.samples), ctx)
            run.add(sample)
            progress.console.print(_line(sample), highlight=False)
            progress.advance(task)


def _finish(run: Run, args: argparse.Namespace, console: Console) -> None:
    from harness import report

    for path in report.render(run.directory):
        console.print(f"wrote {path}", highlight=False)
    readme = Path(__file__).resolve().parent.parent / "README.md"
    if not args.no_readme and run.directory.parent.resolve() == (readme.parent / "results").resolve():
        report.update_readme(readme, run.directory)
    print(report.terminal_table(report.load_run(run.directory / "run.json")), flush=True)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=False, highlight=False)
    apps = discover(args.apps) if args.apps else discover()
    the_run = _prepare_run(args, apps)
    server_cpus, load_cpus = split_cpus(the_run.options["workers"])
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    todo = _todo(the_run)
    console.print(f"run {the_run.run_id}: {len(the_run.cells)} cells × {the_run.options['repeats']} repeats, "
                  f"{len(todo)} samples to measure; server on cores {sorted(server_cpus or [])}, "
                  f"load generator and PostgreSQL on {sorted(load_cpus or [])}", highlight=False)
    build = python_build()
    console.print(f"Python {platform.python_version()} " + python_summary(build).replace("`", ""), highlight=False,
                  markup=False)
    if unoptimized(build):
        console.print("  [yellow]an unoptimized build (no PGO, shared libpython): servers on an optimized Python "
                      "used 5–20% less CPU; see README, 'Against the design's reference figures'[/yellow]",
                      highlight=False)
    interrupted = False
    with _database(the_run.options, args.dsn, load_cpus) as db, \
            tempfile.TemporaryDirectory(prefix="insertbench-run-") as workdir:
        if not the_run.environment:
            affinity = {"server": sorted(server_cpus or []), "loadgen": sorted(load_cpus or []),
                        "postgres": sorted(load_cpus or []) if db.embedded else []}
            the_run.environment = collect(affinity, db.describe())
            the_run.save()
        console.print(f"PostgreSQL {db.version} at {db.redacted_dsn}", highlight=False)
        ctx = Context(database=db, apps=apps, options=the_run.options, server_cpus=server_cpus,
                      load_cpus=load_cpus, workdir=Path(workdir), tag="r" + the_run.run_id.replace("-", "")[:14])
        try:
            _measure_all(the_run, todo, ctx, console)
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        console.print(f"interrupted: kept {len(the_run.samples)} samples in {the_run.path}; "
                      f"finish with: nox -s bench -- --resume {the_run.run_id}", highlight=False)
        return 130
    _finish(the_run, args, console)
    failed = sum(1 for s in the_run.samples if s["status"] != "ok")
    if failed:
        console.print(f"{failed} samples failed; their reasons are in {the_run.directory / 'matrix.md'}")
    return 0
