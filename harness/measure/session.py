"""Running a run's plan: start PostgreSQL, measure samples interleaved, render.

The cells and the samples still wanted come from ``harness.measure.plan``. Repeats are interleaved
(A B C, A B C) with a fresh server for every sample, so slow drift of a shared machine spreads over every
cell instead of landing on one. ``--repeats`` is the minimum: afterwards, while the time budget lasts,
every cell whose confidence interval is still wider than ``--precision`` gets one more sample per round,
the widest first, rounds again interleaved. Then, when asked, each cell gets one callgrind window
(``--instructions``) and one profiled window (``--profile``), outside its CPU samples. The server gets its
own core(s), the load generator, PostgreSQL and the harness the others. Each sample is written to run.json
as soon as it is measured; Ctrl-C (or SIGTERM) stops the server, the load and PostgreSQL, keeps every
finished sample, and says how to resume. So do the faults no later sample could get past: the database gone
(its postmaster ended, or a server of the user's stops answering), checked before every sample and after one
that failed, whose spoiled sample is not kept; and a results disk that is full. A fault of one sample (its
server died or was never ready, its load generator died) fails that sample only, and the run goes on. A run is
resumed only with the commit, interpreter, packages and database it was started with.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from harness import axes
from harness.analysis.stats import cell_stats, sample_metrics
from harness.analysis.summary import Analysis, analyse
from harness.axes import FLOOR
from harness.errors import RunStopped, UsageError
from harness.measure import own as _own
from harness.measure import own_checks as _own_checks
from harness.measure import soak as _soak
from harness.measure.apps import ROOT, App, discover
from harness.measure.floor import app as floor_app
from harness.measure.metadata import _git, collect, python_build, python_summary, unoptimized
from harness.measure.plan import (
    DEFAULTS,
    base_todo,
    full_matrix,
    imprecise_todo,
    ladder_cells,
    plan,
    resolve_options,
    window_todo,
)
from harness.measure.postgres import Database, embedded, existing
from harness.measure.process import remove_stale, split_cpus, workspace
from harness.measure.resume import resume_command, watched, writing
from harness.measure.sample import Context, measure
from harness.model import Cell, Run, Sample, new_run_id, resume_mismatches
from harness.report.matrix import render
from harness.report.readme import update_readme
from harness.report.table import terminal_table


@contextlib.contextmanager
def _database(options: dict, dsn: str | None, cpus: set[int] | None) -> Iterator[Database]:
    if dsn:
        yield existing(dsn)
    else:
        with embedded(durable=options["durable"], cpus=cpus) as db:
            yield db


def _prepare_run(args: argparse.Namespace, apps: dict[str, App], own: _own.OwnApp | None = None) -> Run:
    if args.resume:
        directory = args.results / args.resume
        if not (directory / "run.json").is_file():
            found = sorted(p.parent.name for p in args.results.glob("*/run.json")) or ["none"]
            raise UsageError(f"no run {args.resume!r} in {args.results}; runs there: {', '.join(found)}")
        try:
            run = Run.load(directory)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        missing = sorted({c.framework for c in run.cells} - set(apps))
        if (run.options.get("app") or {}).get("module") in missing:
            raise UsageError(f"run {args.resume} measured your app {run.options['app']['module']}: pass the same "
                             "--app, --app-dir, --request and other options again to resume it")
        if missing:
            raise UsageError(f"run {args.resume} needs apps that are gone from apps/: {', '.join(missing)}")
        if run.options.get("dsn") and not args.dsn:
            raise UsageError(f"run {args.resume} used --dsn {run.options['dsn']}: pass --dsn again to resume it")
        return run
    options = resolve_options(args, apps) | _soak.options(args, apps)
    cells = plan(options, apps) if options["frameworks"] and not _soak.alone(args) else []
    if own:
        options["app"] = own.describe()
        mine = own.cells(options["servers"])  # and the knobs that need no change to its code (the collector's)
        mine += [c.but(knob=k) for k in options["knobs"] for c in list(mine) if axes.KNOBS[k].gc]
        cells = mine + cells
    run_id = new_run_id(_git("rev-parse", "HEAD"))
    return Run(run_id=run_id, directory=args.results / run_id, options=options, cells=cells)


def _line(sample: Sample) -> str:
    label = sample.cell.label + ("" if sample.kind == "cpu" else f" \\[{sample.kind}]")
    if not sample.ok:
        reason = (sample.reason or "").splitlines()[0][:160] if sample.reason else ""
        return f"[red]✗ {label} #{sample.repeat + 1}: {escape(reason)}[/red]"
    m = sample_metrics(sample)
    if sample.kind == "instructions":  # its CPU time is valgrind's, tens of times the server's own
        figures = [f"{m.instructions_per_insert:,.0f} instructions/insert",
                   f"{m.gc_instructions_per_insert:,.0f} in the garbage collector" if m.gc_instructions_per_insert
                   else ""]
    else:
        per = "request" if sample.cell.db == _own.OWN_DB else "insert"  # a user's app counts per request
        figures = [f"{m.server_cpu_us_per_insert:,.1f} µs/{per}" if m.server_cpu_us_per_insert else "n/a",
                   f"{m.rps:,.0f} req/s" if m.rps else ""]
    return f"✓ {label} #{sample.repeat + 1}: " + ", ".join(f for f in figures if f)


class Sampler:
    """Measures planned samples one after another under a progress bar, saving each as it lands.

    Before each sample, and after one that failed, the database is checked: when it is gone no later sample can
    succeed, so the run stops (``RunStopped``), and the sample it spoiled is not kept, for a resumption to measure.
    """

    def __init__(self, run: Run, ctx: Context, console: Console) -> None:
        self.run, self.ctx, self.console = run, ctx, console
        self.spent: list[float] = []

    def measure(self, todo: list[tuple[Cell, str, int]], progress: Progress, task: object) -> None:
        for cell, kind, repeat in todo:
            progress.update(task, description=f"{cell.label} {kind} #{repeat + 1}")
            started = time.monotonic()
            sample = self._sample(cell, kind, repeat)
            if kind == "cpu":
                self.spent.append(time.monotonic() - started)
            with writing(self.run):
                self.run.add(sample)
            progress.console.print(_line(sample), highlight=False)
            progress.advance(task)

    def _sample(self, cell: Cell, kind: str, repeat: int) -> Sample:
        which = f"sample {repeat + 1}" + ("" if kind == "cpu" else f" ({kind})")
        return watched(self.run, self.ctx.database, f"{which} of {cell.label}",
                       lambda: measure(cell, repeat, len(self.run.samples), self.ctx, kind))

    def typical(self) -> float:
        return sorted(self.spent)[len(self.spent) // 2] if self.spent else 5.0


def _measure_all(run: Run, ctx: Context, console: Console) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    started = time.monotonic()
    budget = run.options.get("budget", DEFAULTS["budget"]) * 60
    sampler = Sampler(run, ctx, console)
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=len(base_todo(run)) + len(window_todo(run)))
        while base := base_todo(run):  # round by round: every cell's first sample, then every cell's second…
            first = min(repeat for _, _, repeat in base)
            sampler.measure([t for t in base if t[2] == first], progress, task)
            added = ladder_cells(run, ctx.apps)
            if added:
                run.cells.extend(added)
                with writing(run):
                    run.save()
                remaining = len(base_todo(run)) + len(window_todo(run))
                progress.update(task, total=progress.tasks[0].completed + remaining)
                progress.console.print(f"the ladders need {len(added)} more cells: "
                                       f"{', '.join(c.label for c in added[:4])}{' …' if len(added) > 4 else ''}",
                                       highlight=False)
        sampler.measure(window_todo(run), progress, task)  # the ladders' callgrind windows, within the budget
        while rounds := imprecise_todo(run):
            room = int((budget - (time.monotonic() - started)) // sampler.typical())
            if room <= 0:
                break
            chosen = rounds[:room]
            progress.update(task, total=progress.tasks[0].total + len(chosen))
            sampler.measure(chosen, progress, task)
        sampler.measure(window_todo(run), progress, task)


def _precision_line(run: Run) -> str:
    target = run.options.get("precision", DEFAULTS["precision"])
    stats = [cell_stats(c, run.of(c), target / 100) for c in run.cells]
    measured = [s for s in stats if s.ok and s.precision is not None]
    if not measured:
        return "precision: too few samples per cell for a confidence interval (use --repeats 3 or more)"
    within = sum(1 for s in measured if not s.imprecise)
    widths = sorted(s.precision for s in measured)
    return (f"precision: {within} of {len(measured)} cells within ±{target:g}% (95% interval of the median); "
            f"median ±{widths[len(widths) // 2]:.1%}, widest ±{widths[-1]:.1%}; "
            f"{sum(s.repeats for s in measured)} CPU samples")


def _finish(run: Run, args: argparse.Namespace, apps: dict[str, App], console: Console) -> None:
    analysis = analyse(run)  # the run in memory, analysed once for every file, the README and the terminal
    with writing(run, rendering=True):
        for path in render(run, analysis):
            console.print(f"wrote {path}", highlight=False)
    say = refresh_readme(analysis, apps, asked=args.readme, refused=args.no_readme)
    if say:
        console.print(say, highlight=False)
    print(terminal_table(analysis), flush=True)


def refresh_readme(analysis: Analysis, apps: dict[str, App], *, asked: bool, refused: bool,
                   readme: Path | None = None) -> str | None:
    """Show the run in the README's results section if it is the newest full matrix in the results/ beside the
    README (the repository's, by default) or ``asked``, and say what was done; a run elsewhere, or ``refused``,
    leaves the README alone."""
    run, readme = analysis.run, readme or ROOT / "README.md"
    results = (readme.parent / "results").resolve()
    if refused or run.directory.parent.resolve() != results:
        return None
    if asked or newest_full_run(results, apps) == run.directory.resolve():
        changed = update_readme(readme, analysis)
        return "refreshed README.md's results section" if changed else "README.md's results section shows this run"
    if full_matrix(run, apps):
        return "README.md's results section left as it is: it shows the newest full run (--readme to show this one)"
    return "README.md's results section left as it is: it shows full runs only (--readme to show this one)"


def newest_full_run(results: Path, apps: dict[str, App]) -> Path | None:
    """The newest run under ``results`` that measured the whole default matrix (run ids start with the time)."""
    for directory in sorted((p.parent.resolve() for p in results.glob("*/run.json")), reverse=True):
        with contextlib.suppress(ValueError, OSError):
            if full_matrix(Run.load(directory), apps):
                return directory
    return None


def _environment(run: Run, db: Database, server_cpus: set[int] | None, load_cpus: set[int] | None) -> None:
    """Record where the run happens; a resumed run must happen in the same place, or it stops here."""
    affinity = {"server": sorted(server_cpus or []), "loadgen": sorted(load_cpus or []),
                "postgres": sorted(load_cpus or []) if db.embedded else []}
    current = collect(affinity, db.describe())
    if run.environment:
        changed = resume_mismatches(run.environment, current)
        if changed:
            raise UsageError(f"run {run.run_id} cannot be resumed here: its samples were measured with another "
                             f"{'; '.join(changed)}; start a new run instead")
        return
    run.environment = current
    with writing(run):
        run.save()


def _announce(run: Run, server_cpus: set[int] | None, load_cpus: set[int] | None, console: Console) -> None:
    base, windows = len(base_todo(run)), len(window_todo(run))
    extra = (f", then more where a cell's interval is wider than ±{run.options['precision']:g}% "
             f"(within {run.options['budget']:g} min)" if run.options.get("budget") else "")
    kinds = f" and {windows} callgrind/profiled windows" if windows else ""
    matrix = (f"{len(run.cells)} cells × {run.options['repeats']} repeats, {base} samples{kinds} to measure{extra}"
              if run.cells else "")
    if run.options.get("question") and not run.options.get("ladder_instructions"):
        from harness.measure.callgrind import INSTALL

        console.print(f"no valgrind here: the ladders' steps rest on CPU time alone ({INSTALL})", highlight=False)
    console.print(f"run {run.run_id}: {'; then '.join(p for p in (matrix, _soak.describe(run.options)) if p)}; "
                  f"server on cores {sorted(server_cpus or [])}, "
                  f"load generator and PostgreSQL on {sorted(load_cpus or [])}", highlight=False)
    build = python_build()
    console.print(f"Python {platform.python_version()} " + python_summary(build).replace("`", ""), highlight=False,
                  markup=False)
    if unoptimized(build):
        console.print("  [yellow]an unoptimized build (no PGO, shared libpython): servers on an optimized Python "
                      "used 5–20% less CPU; measure with the Python you deploy on (--python PATH)[/yellow]",
                      highlight=False)


def _serving_pythons(run: Run, console: Console) -> dict[str, str]:
    """Each interpreter the run's cells name, ready to serve (a virtualenv of the servers' packages, made once)."""
    from harness.measure.pythons import Interpreter, environment

    wanted = {c.python for c in run.cells if c.python}
    found = {p["label"]: Interpreter.from_dict(p) for p in run.options.get("pythons") or []}
    missing = sorted(wanted - set(found))
    if missing:
        raise UsageError(f"run {run.run_id} names interpreters it did not record: {', '.join(missing)}")
    say = lambda text: console.print(text, highlight=False, markup=False)  # noqa: E731
    ready = {}
    for label in sorted(wanted):
        try:
            ready[label] = environment(found[label], say).python
        except UsageError as exc:
            if run.options.get("python_asked"):
                raise
            say(f"left out Python {label}, found on this machine: {exc}")  # the default run goes on without it
            run.cells[:] = [c for c in run.cells if c.python != label]
            run.options["pythons"] = [p for p in run.options["pythons"] if p["label"] != label]
    return ready | _pinned_pythons(run, found, say)


def _pinned_pythons(run: Run, found: dict, say) -> dict[str, str]:
    """A virtualenv per (interpreter, app, knob with pins) the run's cells name: the app's packages at the knob's
    versions (``Context.python`` finds it by ``pinned_label``)."""
    from harness.measure.pythons import Interpreter, environment, own, pinned_label, pinned_requirements

    ready = {}
    for cell in run.cells:
        for name in axes.knob_names(cell.knob):
            knob = axes.KNOBS.get(name)
            label = pinned_label(cell, name)
            if not knob or not knob.pins or label in ready:
                continue
            interpreter = found.get(cell.python) if cell.python else own()
            base = Interpreter(label=label, base=interpreter.base, version=interpreter.version,
                               build=interpreter.build)
            requirements = pinned_requirements(ROOT / "apps" / cell.framework, knob.pins)
            ready[label] = environment(base, say, requirements).python
    return ready


def _check_tools(options: dict) -> None:
    """Optional features need their tools: say how to get them before anything starts."""
    if options.get("instructions"):
        from harness.measure.callgrind import require_valgrind

        require_valgrind()


def _own_app(args: argparse.Namespace, apps: dict[str, App]) -> _own.OwnApp | None:
    """--app's app, added to ``apps`` under its module's name; None without --app."""
    given = [f"--{name.replace('_', '-')}" for name in _OWN_OPTIONS if getattr(args, name, None)]
    if not getattr(args, "app", None):
        if given:
            raise UsageError(f"{', '.join(given)} go with --app MODULE:ATTR (your app); see docs/own-app.md")
        return None
    if not args.request:
        raise UsageError('--app needs --request "METHOD /path": the request to measure')
    own = _own.from_args(args)
    if own.module in apps:
        raise UsageError(f"--app {args.app}: {own.module!r} is the name of an app in apps/; import yours under "
                         "another module name")
    apps[own.module] = own.app()
    return own


_OWN_OPTIONS = ("app_dir", "request", "body", "header", "env", "setup_sql", "app_python", "requirements", "health")


def _prepare_own(own: _own.OwnApp, run: Run, db: Database, apps: dict[str, App], server_cpus: set[int] | None,
                 console: Console) -> None:
    """Before the first sample: the app's tables, its import, and one request it must answer 2xx."""
    _own_checks.run_setup_sql(own, db.dsn)
    _own_checks.check_import(own, db.dsn)
    server = next(c.server for c in run.cells if c.framework == own.module)
    _own_checks.preflight(own, apps[own.module], server, db.dsn, server_cpus)
    console.print(f"your app {own.module}:{own.attr} answers {own.request.label} under {server}", highlight=False)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=False, highlight=False, soft_wrap=True)
    apps = discover(args.apps) if args.apps else discover() | {FLOOR: floor_app()}  # the floor: a cell of its own
    own = _own_app(args, apps)
    the_run = _prepare_run(args, apps, own)
    if own:
        _own_checks.check_servers(own, sorted({c.server for c in the_run.cells if c.framework == own.module}))
        if args.requirements:
            _own_checks.install_requirements(args.requirements)
    _check_tools(the_run.options)
    server_cpus, load_cpus = split_cpus(the_run.options["workers"])
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    _announce(the_run, server_cpus, load_cpus, console)
    interrupted = False
    remove_stale()  # the temporary directories of runs that were killed outright
    try:  # an interrupt anywhere in here stops the servers, the load and PostgreSQL, and removes their directories
        with _database(the_run.options, args.dsn, load_cpus) as db, workspace("run") as workdir:
            console.print(f"PostgreSQL {db.version} at {db.redacted_dsn}", highlight=False)
            if own:
                _prepare_own(own, the_run, db, apps, server_cpus, console)
            _environment(the_run, db, server_cpus, load_cpus)
            ctx = Context(database=db, apps=apps, options=the_run.options, server_cpus=server_cpus,
                          load_cpus=load_cpus, workdir=workdir, tag="r" + the_run.run_id.replace("-", ""),
                          run_dir=the_run.directory, pythons=_serving_pythons(the_run, console))
            _measure_all(the_run, ctx, console)
            _soak.soak(the_run, ctx, console)  # --soak: each chosen cell's long run, after the matrix
    except KeyboardInterrupt:
        interrupted = True
    except RunStopped as exc:  # once the servers, the load and PostgreSQL are stopped and their directories gone
        return _stopped(exc)
    if interrupted and not the_run.path.is_file():
        console.print("interrupted before the first sample: nothing kept", highlight=False)
        return 130
    if interrupted:
        console.print(f"interrupted: kept {len(the_run.samples)} samples in {the_run.path}; "
                      f"finish with: {resume_command(the_run)}", highlight=False)
        return 130
    if the_run.cells:
        console.print(_precision_line(the_run), highlight=False)
    try:
        _finish(the_run, args, apps, console)
    except RunStopped as exc:
        return _stopped(exc)
    failed = sum(1 for s in the_run.samples if not s.ok)
    if failed:
        console.print(f"{failed} samples failed; their reasons are in {the_run.directory / 'matrix.md'}")
    return 0


def _stopped(exc: RunStopped) -> int:
    """A fault that stopped the run: one line, exit status 2 (what the command line gives any error it names)."""
    print(f"insertbench: {exc}", file=sys.stderr, flush=True)
    return 2
