"""matrix.md: the answer, the grids, every cell, the soak, the layer attribution, the original app, the environment.

Rendering reads the run alone (no clock, no machine lookups), so rendering a run again reproduces its files
byte for byte. ``render`` writes every file of a run: matrix.md here, matrix.csv (``table``), the charts
(``charts``, ``profile``), from one ``Analysis``. `python -m harness report [RUN_ID]` (`nox -s report`) and
the end of a run call it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from harness.analysis.attribution import Attribution
from harness.analysis.stats import (
    CONFIDENCE,
    TARGET_INSERTS_PER_S,
    CellStats,
    bulk_suffix,
    cheapest_verified,
    common_groups,
    layer_order,
    main_cells,
    original_stack,
    seed_cell,
)
from harness.analysis.summary import Analysis, analyse
from harness.model import Cell, Run, write_atomically
from harness.report import answer as _answer
from harness.report import charts as _charts
from harness.report import own as _own_report
from harness.report import profile as _profile
from harness.report import soak as _soak
from harness.report import statements as _statements
from harness.report import table as _table
from harness.report.format import (
    IMPRECISE_MARK,
    UNVERIFIED_MARK,
    about,
    cores,
    count,
    cpu_cell,
    ins_per_request,
    interval,
    md_text,
    mega,
    per_insert,
    python_summary,
    short,
    table,
)

HANDLER_NOTE = (
    "The app's own figure wraps `time.process_time()` around `await`s: while one request waits for the "
    "database, the event loop runs other requests and their CPU is counted too, so under concurrency{load} it "
    "is not the CPU one request costs. The true figure is the server process tree's CPU divided by the "
    "requests it answered."
)
CPU_DEFINITION = (
    "**Server CPU per insert** = Δ(user + system CPU) of the server process and all its descendants over "
    "the measured window ÷ rows inserted in that window, counted in the database (for `none`: items "
    "acknowledged). A cell's figure is the median of its repeats, with a 95% bootstrap confidence interval of "
    "that median in brackets (scipy's `bootstrap`, percentile method; with 3 samples it is their min–max); "
    "inserts/s per core = 10⁶ ÷ µs per insert. Cells whose intervals overlap cannot be told apart by this run."
)
INSTRUCTIONS_NOTE = (
    "Instructions per insert come from one extra window per cell with the server under valgrind's callgrind, "
    "instrumentation switched on only for {requests} requests at {concurrency} connections after a warm-up: "
    "the user-space instructions of every process and thread of the server tree, divided by the rows "
    "inserted. At {concurrency} connections the warm-up (instrumented too, so at the window's pace) opens "
    "every database connection the window will use; at 16 or 64 the pool kept growing inside the window, "
    "and each new connection's login (~28M instructions) moved the count by several percent. "
    "The cyclic garbage collector is counted apart (GC column in matrix.csv): its full passes walk the whole "
    "heap in lumps of 14–30M instructions, so whether a window holds one would move the count by 5–10%. "
    "So counted, instructions repeat within a fraction of a percent where CPU time moves by ten: a difference "
    "of more than 1% is real. They leave out the kernel (system time stays in the CPU figures) and weigh "
    "every instruction alike (a cache miss costs as much as an add). Under callgrind the server runs tens of "
    "times slower, so the `coalesced` layer sees other batches than at full speed: its rows per statement in "
    "that window are shown."
)


def instructions_cell(cell: CellStats) -> str:
    if cell.instructions is None:
        return "failed" if cell.instructions_reason else "—"
    return mega(cell.instructions_per_insert)


def answer(cells: list[CellStats]) -> str:
    """The original stack's cost, the cheapest verified cell's, the ratio, and the cores each needs."""
    seed, base, best = seed_cell(cells), original_stack(cells), cheapest_verified(cells)
    target = f"{TARGET_INSERTS_PER_S:,}"
    if base is None:
        first = "Neither the original app (seed) nor FastAPI + ORM has a result in this run."
    else:
        if base is seed:
            subject = "The original stack (seed: FastAPI + SQLAlchemy `AsyncSession`)"
        else:
            why = (f"has no result in this run ({seed.status}: {md_text(seed.reason or '', 120)})" if seed
                   else "is not in this run")
            subject = f"The original app (seed) {why}, so FastAPI + ORM stands in for it: it"
        first = (f"{subject} costs **{short(base.us_per_insert)} µs** of server CPU per insert "
                 f"(`{base.key.label}`): about {about(base.inserts_per_core_s)} inserts/s per core, so "
                 f"{target} inserts/s needs **{cores(base.cores_for_10k)} cores**.")
    if best is None:
        return first + " No cell with a database layer both succeeded and passed verification."
    second = (f"The cheapest verified cell with a database, **`{best.key.label}`**, costs "
              f"**{short(best.us_per_insert)} µs** per insert")
    if base is not None:
        second += f", **{base.us_per_insert / best.us_per_insert:.1f}× less**"
    return (f"{first} {second}: about {about(best.inserts_per_core_s)} inserts/s per core, "
            f"**{cores(best.cores_for_10k)} cores** for {target} inserts/s.")


def _grid_tables(cells: list[CellStats], what: str, row_cells: Callable[[dict[str, CellStats]], dict[str, str]]) -> str:
    """One table per server (and inserts per request): frameworks x database layers, each cell as
    ``row_cells`` writes the cells of one framework's row."""
    parts = []
    cells = main_cells(cells)
    for server, per_request, shape in dict.fromkeys((c.key.server, c.key.inserts_per_request, c.key.shape)
                                                     for c in cells):
        group = [c for c in cells if (c.key.server, c.key.inserts_per_request, c.key.shape) == (server, per_request,
                                                                                                 shape)]
        by_key = {(c.key.framework, c.key.db): c for c in group}
        layers = layer_order(group)
        rows = []
        for fw in dict.fromkeys(c.key.framework for c in group):
            text = row_cells({db: by_key[fw, db] for db in layers if (fw, db) in by_key})
            rows.append([f"**{fw}**", *(text.get(db, "—") for db in layers)])
        title = f"**{server}**" + ("" if per_request == 1 else f", {per_request} inserts per request, "
                                   + ("one statement" if shape == "bulk" else "one statement each"))
        parts.append(f"{title}: {what}\n\n" + table(["framework", *layers], rows, "l" + "r" * len(layers)))
    return "\n\n".join(parts)


def _cpu_row(row: dict[str, CellStats], leaking: Collection[Cell] = ()) -> dict[str, str]:
    groups = common_groups({db: c.ci for db, c in row.items() if c.ok})
    return {db: cpu_cell(c, groups.get(db, "")) + _leaking(c, leaking) for db, c in row.items()}


def _leaking(cell: CellStats, leaking: Collection[Cell]) -> str:
    """The soak's word for a cell whose memory kept growing (the Soak section says how it was judged)."""
    return " **leaking**" if cell.key in leaking else ""


def grids(cells: list[CellStats], leaking: Collection[Cell] = ()) -> str:
    """Per server (and inserts per request): frameworks x database layers, median µs per insert."""
    what = f"server CPU µs per insert, median [{CONFIDENCE:.0%} interval]"
    return _grid_tables(cells, what, lambda row: _cpu_row(row, leaking)) + "\n\n" + legend(cells, leaking)


def legend(cells: list[CellStats], leaking: Collection[Cell] = ()) -> str:
    target = next((c for c in cells if c.ok), None)
    notes = ["— not part of the matrix", "(a), (b)…: cells of a row sharing a letter have overlapping "
             "intervals, so this run cannot tell them apart"]
    if any(c.imprecise for c in cells) and target is not None:
        notes.append(f"{IMPRECISE_MARK} the interval is wider than the run's precision target, or the cell "
                     "has too few samples for one")
    if any(c.ok and not c.verified for c in cells):
        notes.append(f"{UNVERIFIED_MARK} verification found problems (see the full table)")
    if any(c.key in leaking for c in cells):
        notes.append("**leaking**: its soak saw the server's memory keep growing (see Soak)")
    return "; ".join(notes) + "."


def instruction_grids(cells: list[CellStats], options: Mapping[str, Any]) -> str | None:
    """Per server: frameworks x database layers, instructions per insert from the callgrind windows."""
    counted = [c for c in cells if c.instructions is not None or c.instructions_reason]
    if not counted:
        return None
    tables = _grid_tables(counted, "instructions per insert (callgrind)",
                          lambda row: {db: instructions_cell(c) for db, c in row.items()})
    batches = [f"`{c.key.label}` {c.instructions.rows_per_statement:.1f}" for c in counted
               if c.key.db == "coalesced" and c.instructions and c.instructions.rows_per_statement]
    failures = [f"- `{c.key.label}`: {md_text(c.instructions_reason or '')}" for c in counted
                if c.instructions is None]
    text = tables + "\n\n" + INSTRUCTIONS_NOTE.format(
        requests=f"{options['instruction_requests']:,}" if options.get("instruction_requests") else "a fixed number of",
        concurrency=options.get("instruction_concurrency") or "a few")
    if batches:
        text += " Rows per statement under callgrind: " + ", ".join(batches) + "."
    if failures:
        text += "\n\nWindows that failed:\n\n" + "\n".join(failures)
    return text


def _memory(m: Any) -> str:
    """The server tree's resident memory after the warm-up and at the window's end, or — where not measured."""
    if m.server_rss_warm_mib is None or m.server_rss_end_mib is None:
        return "—"
    return f"{m.server_rss_warm_mib:.0f} → {m.server_rss_end_mib:.0f}"


def full_table(cells: list[CellStats], leaking: Collection[Cell] = ()) -> str:
    header = ["framework", "server", "db", "ins/req", "µs/insert median [95% interval] (min–max)", "µs/request",
              "user / system µs/insert", "PG µs/insert", "stmts/insert", "xacts/insert", "req/s",
              "p50 / p99 ms", "loadgen µs/req", "errors", "verified", "inserts/s per core", "cores for 10k/s",
              "server MiB (warm → end)"]
    rows = []
    for c in cells:
        key = [c.key.framework, c.key.server, c.key.db, ins_per_request(c)]
        if not c.ok:
            rows.append([*key, f"**{c.status}**: {md_text(c.reason or '')}"] + [""] * (len(header) - 5))
            continue
        m = c.median
        rows.append([*key, f"{cpu_cell(c)} ({short(c.cpu_min)}–{short(c.cpu_max)}, {c.repeats} samples)"
                     + _leaking(c, leaking),
                     short(m.server_cpu_us_per_request),
                     f"{short(m.user_us_per_insert)} / {short(m.system_us_per_insert)}",
                     short(m.pg_cpu_us_per_insert), per_insert(m.statements_per_insert),
                     per_insert(m.transactions_per_insert), count(m.rps), f"{short(m.p50_ms)} / {short(m.p99_ms)}",
                     short(m.loadgen_cpu_us_per_request), count(c.errors),
                     "yes" if c.verified else f"**no** {UNVERIFIED_MARK}", count(c.inserts_per_core_s),
                     cores(c.cores_for_10k), _memory(m)])
    text = table(header, rows, "llll" + "r" * (len(header) - 4))
    problems = [f"- `{c.key.label}`: {md_text('; '.join(c.verify_errors))}" for c in cells if c.ok and not c.verified]
    return text + ("\n\nVerification problems:\n\n" + "\n".join(problems) if problems else "")


def attribution_table(rows: list[Attribution], what: str = "Server CPU µs",
                      fmt: Callable[[float], str] | None = None) -> str:
    fmt = fmt or short
    if not rows:
        return "No framework × server has the cells attribution needs (`none` and at least one database layer)."
    intro = (f"{what} per insert that each layer adds, from the cell medians: HTTP + framework = `none`; "
             "+ driver = `asyncpg` − `none`; + SQLAlchemy Core = `core` − `asyncpg`; + ORM session = `orm` − "
             "`core`; coalescing saves = `asyncpg` − `coalesced`. — where a cell it needs is absent or failed.")
    body = [[f"**{r.framework}**", r.server + bulk_suffix(r.inserts_per_request)
             + ("" if r.inserts_per_request == 1 else f" {r.shape}"),
             *("—" if x is None else fmt(x) for x in (*r.layers, r.coalescing_saves))] for r in rows]
    header = ["framework", "server", "HTTP + framework", "+ driver", "+ SQLAlchemy Core", "+ ORM session",
              "coalescing saves"]
    return intro + "\n\n" + table(header, body, "llrrrrr")


def seed_versus_orm(cells: list[CellStats]) -> str:
    """How the published handler differs in cost from the `orm` layer's mapped-object path, per server."""
    by_key = {c.key: c for c in cells if c.ok}
    lines = []
    for seed in (c for c in cells if c.ok and c.key.framework == "seed"):
        orm = by_key.get(seed.key.but(framework="fastapi"))
        if orm is None:
            continue
        figures = (f"{short(seed.us_per_insert)} µs{interval(seed)} against {short(orm.us_per_insert)} µs"
                   f"{interval(orm)} per insert ({seed.us_per_insert / orm.us_per_insert:.2f}×)")
        if seed.instructions and orm.instructions:
            figures += (f"; {mega(seed.instructions_per_insert)} against {mega(orm.instructions_per_insert)} "
                        "instructions")
        lines.append(f"- {seed.key.server}{_many(seed)}: {figures}.")
    if not lines:
        return ""
    return ("The published handler executes a `text()` INSERT … RETURNING through `session.execute` and reads "
            "`scalar_one()`; the `orm` layer (`fastapi/orm`) adds a mapped object to the session and lets the "
            "unit of work flush it. Both run BEGIN, INSERT, COMMIT. Seed against `fastapi/orm`:\n\n"
            + "\n".join(lines))


def _many(c: CellStats) -> str:
    many = "" if c.key.inserts_per_request == 1 else f", {c.key.inserts_per_request} inserts per request {c.key.shape}"
    return many + (f", Python {c.key.python}" if c.key.python else "")


def handler_section(cells: list[CellStats], options: Mapping[str, Any]) -> str:
    seeds = [c for c in cells if c.key.framework == "seed" and c.ok
             and c.median.handler_cpu_us_per_request is not None]
    versus = seed_versus_orm(cells)
    if not seeds:
        return "\n\n".join(p for p in ("No seed cell in this run reported its in-handler figure.", versus) if p)
    rows = [[c.key.server + _many(c), short(c.median.handler_cpu_us_per_request),
             short(c.median.server_cpu_us_per_request)] for c in seeds]
    header = ["seed on", "in-handler process_time() µs", "true server CPU µs/request"]
    load = f" ({options['concurrency']} connections here)" if options.get("concurrency") else ""
    return "\n\n".join(p for p in (table(header, rows, "lrr"), HANDLER_NOTE.format(load=load), versus) if p)


def environment_section(run: Run) -> str:
    env, opts = run.environment, run.options
    pg = env.get("postgres") or {}
    lines = []

    def add(label: str, *parts: Any) -> None:
        text = ", ".join(str(p) for p in parts if p not in (None, ""))
        if text:
            lines.append(f"- **{label}**: {text}")

    add("CPU", env.get("cpu_model"), f"{env['cpu_count']} cores" if env.get("cpu_count") else None)
    add("OS", env.get("os"))
    add("Python", env.get("python"), python_summary(env.get("python_build")))
    add("PostgreSQL", pg.get("version"),
        {True: "run by the harness", False: "external (--dsn)"}.get(pg.get("embedded")),
        {True: "pg_stat_statements on", False: "no pg_stat_statements"}.get(pg.get("pg_stat_statements")),
        " ".join(f"`{k}={v}`" for k, v in sorted((pg.get("settings") or {}).items())))
    add("Packages", ", ".join(f"{k} {v}" for k, v in sorted((env.get("packages") or {}).items())))
    add("CPU affinity", *(f"{who} on CPU {', '.join(map(str, cpus))}"
                          for who, cpus in (env.get("affinity") or {}).items()))
    add("Load generator", env.get("loadgen"))
    units = (("concurrency", "connections"), ("workers", "server worker(s)"), ("repeats", "repeats"),
             ("duration", "s measured"), ("warmup", "s warm-up"))
    add("Load", *(f"{opts[k]} {unit.replace('(s)', '' if opts[k] == 1 else 's')}"
                  for k, unit in units if opts.get(k) is not None),
        f"{opts['rate']} requests/s" if opts.get("rate") else "closed loop" if "rate" in opts else None,
        "durable PostgreSQL settings" if opts.get("durable") else None, "quick mode" if opts.get("quick") else None)
    if opts.get("soak_cells"):
        add("Soak", f"{opts['soak_minutes']:g} min per cell", f"{opts['soak_windows']} windows of "
            f"{opts['soak_window']:g} s", "after the matrix" if run.cells else "no matrix")
    commit = env.get("git_commit")
    add("Commit", f"{commit[:12]}{' (uncommitted changes)' if env.get('git_dirty') else ''}" if commit else None)
    add("Date", env.get("date"))
    add("Run", run.run_id)
    return "\n".join(lines) + ("\n\n" if lines else "") + CPU_DEFINITION


def markdown(analysis: Analysis) -> str:
    run, cells = analysis.run, analysis.matrix
    own = _own_report.section(analysis)  # a user's app (--app), apart from the matrix
    soak = [f"## {_soak.TITLE}\n\n{text}" for text in [_soak.section(analysis)] if text]
    if (own or soak) and not cells:  # a user's app alone, or a soak alone
        return "\n\n".join([f"# insertbench run {run.run_id}", *([f"## Your app\n\n{own}"] if own else []),
                             *filter(None, [_profile.profile_part(analysis)]), *soak,
                             "## Environment and method\n\n" + environment_section(run)]) + "\n"
    not_ok = [f"`{c.key.label}` ({c.status})" for c in cells if not c.ok]
    left_out = ", ".join(not_ok) if len(not_ok) <= 6 else f"{len(not_ok)} failed or missing cells (see below)"
    optional = [("What to change", _answer.what_to_change(analysis.ladders, analysis.in_stack)),
                ("Knobs", _answer.knob_section(cells)),
                ("Interpreters", _answer.interpreter_section(cells, run.environment, run.options)),
                ("What reading the request body costs", _answer.body_read_section(cells)),
                ("Against the floor", _answer.floor_section(cells, analysis.profile_rows)),
                (_statements.TITLE, _statements.section(analysis))]
    checks = _answer.cross_checks(cells)
    sections = [
        f"# insertbench run {run.run_id}",
        "## The answer\n\n" + "\n\n".join(filter(None, [_answer.headline(analysis.ladders, analysis.in_stack),
                                                       answer(cells)])),
        *([f"## Your app\n\n{own}"] if own else []),
        *(f"## {title}\n\n{text}" for title, text in optional[:1] if text),
        "## Server CPU per insert\n\n" + grids(cells, analysis.leaking)
        + "\n\n![Server CPU per insert, every cell](cpu_per_insert.png)\n\nBars: median; whiskers: the 95% "
        "interval (min–max for a cell with too few samples for one)."
        + (f" Not in the chart: {left_out}." if left_out else ""),
        *(f"## {title}\n\n{text}" for title, text in optional[1:] if text),
        *filter(None, [_profile.profile_part(analysis)]),
        "## Every cell\n\n" + full_table(cells, analysis.leaking),
        *soak,
        "## Where the CPU goes, layer by layer\n\n" + attribution_table(analysis.attribution)
        + "\n\n![Layer attribution](attribution.png)",
        *instructions_sections(analysis),
        "## The original app\n\n" + handler_section(cells, run.options),
        *([f"## Cross-checks\n\n{checks}"] if checks else []),
        "## Environment and method\n\n" + environment_section(run),
    ]
    return "\n\n".join(sections) + "\n"


def instructions_sections(analysis: Analysis) -> list[str]:
    """The instruction grids and the layer attribution in instructions, when the run counted any."""
    grids_text = instruction_grids(analysis.matrix, analysis.run.options)
    if grids_text is None:
        return []
    rows = analysis.instruction_attribution
    return ["## Instructions per insert\n\n" + grids_text,
            "## Where the instructions go, layer by layer\n\n" + attribution_table(rows, "Instructions", mega)]


def render(run: Run, analysis: Analysis | None = None) -> list[Path]:
    """Write matrix.csv, matrix.md, the charts (and profile.csv when cells were profiled, soak.csv and soak.png when
    cells were soaked) into the run's folder; a soak alone gets matrix.md and its own two files."""
    analysis = analysis or analyse(run)
    run_dir, cells = run.directory, analysis.matrix  # the charts are the matrix's
    csv_path, md_path = run_dir / "matrix.csv", run_dir / "matrix.md"
    if analysis.soak and not analysis.cells:  # a soak alone: no matrix to tabulate or chart
        write_atomically(md_path, markdown(analysis))
        return [md_path, *_soak.files(analysis)]
    write_atomically(csv_path, _table.csv_text(analysis))
    write_atomically(md_path, markdown(analysis))
    written = [csv_path, md_path, _charts.cpu_per_insert_chart(cells, run_dir / "cpu_per_insert.png"),
               _charts.attribution_chart(analysis.attribution, cells, run_dir / "attribution.png")]
    if analysis.ladders:
        written.append(_charts.waterfall_chart(analysis.ladders, run_dir / "what_to_change.png"))
    return written + _profile.profile_files(analysis) + _soak.files(analysis)
