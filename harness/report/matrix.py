"""Turn a run's run.json into what a reader sees: matrix.csv, matrix.md, two charts, the README section.

Rendering reads run.json alone (no clock, no machine lookups), so rendering a run again reproduces its
matrix.md byte for byte. `python -m harness report [RUN_ID]` (`nox -s report`) calls in here.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.analysis.ladder import ladders
from harness.analysis.profile import cell_profile
from harness.analysis.stats import (
    CONFIDENCE,
    TARGET_INSERTS_PER_S,
    Attribution,
    CellStats,
    Run,
    attribution,
    bulk_suffix,
    cheapest_verified,
    common_groups,
    instructions_of,
    layer_order,
    load_run,
    main_cells,
    original_stack,
    run_cells,
    seed_cell,
)
from harness.measure.metadata import python_summary
from harness.model import write_atomically
from harness.report import answer as _answer
from harness.report import charts as _charts
from harness.report import own as _own_report
from harness.report.profile import profile_chart, profile_csv, profile_section

RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"
IMPRECISE_MARK, UNVERIFIED_MARK = "†", "‡"
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

# matrix.csv: (column, value of an ok cell, format). The numbers of a cell that is not ok stay empty.
Column = tuple[str, Callable[[CellStats], Any], str]
CSV_HEAD = ["framework", "server", "db", "inserts_per_request", "shape", "python", "status", "verified"]
CSV_NUMBERS: list[Column] = [
    ("server_cpu_us_per_insert", lambda c: c.median.server_cpu_us_per_insert, ".1f"),
    ("server_cpu_us_per_insert_min", lambda c: c.cpu_min, ".1f"),
    ("server_cpu_us_per_insert_max", lambda c: c.cpu_max, ".1f"),
    ("server_cpu_us_per_insert_ci_low", lambda c: c.ci_low, ".1f"),
    ("server_cpu_us_per_insert_ci_high", lambda c: c.ci_high, ".1f"),
    ("server_cpu_us_per_request", lambda c: c.median.server_cpu_us_per_request, ".1f"),
    ("pg_cpu_us_per_insert", lambda c: c.median.pg_cpu_us_per_insert, ".1f"),
    ("loadgen_cpu_us_per_request", lambda c: c.median.loadgen_cpu_us_per_request, ".1f"),
    ("statements_per_insert", lambda c: c.median.statements_per_insert, ".4f"),
    ("transactions_per_insert", lambda c: c.median.transactions_per_insert, ".4f"),
    ("rps", lambda c: c.median.rps, ".1f"),
    ("p50_ms", lambda c: c.median.p50_ms, ".3f"),
    ("p99_ms", lambda c: c.median.p99_ms, ".3f"),
    ("errors", lambda c: c.errors, "d"),
    ("inserts_per_core_s", lambda c: c.inserts_per_core_s, ".0f"),
    ("cores_for_10k", lambda c: c.cores_for_10k, ".3f"),
]
CSV_EXTRA: list[Column] = [
    ("spread", lambda c: c.spread, ".4f"),
    ("user_us_per_insert", lambda c: c.median.user_us_per_insert, ".1f"),
    ("system_us_per_insert", lambda c: c.median.system_us_per_insert, ".1f"),
    ("handler_cpu_us_per_request", lambda c: c.median.handler_cpu_us_per_request, ".1f"),
    ("repeats", lambda c: c.repeats, "d"),
    ("precision", lambda c: c.precision, ".4f"),
    ("steal_ticks", lambda c: (c.machine or {}).get("steal_ticks"), ".0f"),
    ("iowait_ticks", lambda c: (c.machine or {}).get("iowait_ticks"), ".0f"),
]
# Figures of a cell's callgrind window: present whether or not its CPU samples succeeded.
CSV_INSTRUCTIONS: list[Column] = [
    ("instructions_per_insert", lambda c: c.instructions.instructions_per_insert, ".0f"),
    ("instructions_per_request", lambda c: c.instructions.instructions_per_request, ".0f"),
    ("gc_instructions_per_insert", lambda c: c.instructions.gc_instructions_per_insert, ".0f"),
    ("instructions_rows_per_statement", lambda c: c.instructions.rows_per_statement, ".2f"),
]


def short(x: float | None) -> str:
    """About three significant figures: 752, 31.2, 4.56, 1,330."""
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def count(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def per_insert(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}" if x >= 1 or x == 0 else f"{x:.3f}"


def cores(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def about(x: float | None) -> str:
    """A rate to three significant figures: 1,330 or 32,100."""
    return "n/a" if x is None else f"{float(f'{x:.3g}'):,.0f}"


def clip(text: str, limit: int = 160) -> str:
    """Text (an error, a stderr tail) on one line, cut at `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def md_text(text: str, limit: int = 300) -> str:
    """Untrusted text as one line of Markdown that renders literally, even inside a table."""
    line = clip(text, limit)
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", line) + (" (full text in run.json)" if line.endswith("…") else "")


def table(header: list[str], rows: list[list[str]], align: str) -> str:
    rule = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(line) + " |" for line in [header, rule, *rows])


def interval(cell: CellStats) -> str:
    """`[lo–hi]`, the cell's confidence interval, or nothing when it has too few samples for one."""
    return f" [{short(cell.ci_low)}–{short(cell.ci_high)}]" if cell.ci else ""


def cpu_cell(cell: CellStats, group: str = "", with_interval: bool = True) -> str:
    """A cell's median µs per insert, its interval and marks, or its status when it has none."""
    if not cell.ok:
        return cell.status
    marks = (IMPRECISE_MARK if cell.imprecise else "") + ("" if cell.verified else UNVERIFIED_MARK)
    letters = f" ({group})" if group else ""
    return short(cell.us_per_insert) + (interval(cell) if with_interval else "") + marks + letters


def instructions_cell(cell: CellStats) -> str:
    if cell.instructions is None:
        return "failed" if cell.instructions_reason else "—"
    return mega(cell.instructions_per_insert)


def mega(x: float | None) -> str:
    """Instructions: 183k, 2.23M (a difference may be negative: −12.5k)."""
    if x is None:
        return "n/a"
    sign, x = ("−" if x < 0 else ""), abs(x)
    return sign + (f"{x / 1e6:.3g}M" if x >= 1e6 else f"{x / 1e3:.3g}k" if x >= 1e3 else f"{x:.0f}")


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


def _cpu_row(row: dict[str, CellStats]) -> dict[str, str]:
    groups = common_groups({db: c.ci for db, c in row.items() if c.ok})
    return {db: cpu_cell(c, groups.get(db, "")) for db, c in row.items()}


def grids(cells: list[CellStats]) -> str:
    """Per server (and inserts per request): frameworks x database layers, median µs per insert."""
    what = f"server CPU µs per insert, median [{CONFIDENCE:.0%} interval]"
    return _grid_tables(cells, what, _cpu_row) + "\n\n" + legend(cells)


def legend(cells: list[CellStats]) -> str:
    target = next((c for c in cells if c.ok), None)
    notes = ["— not part of the matrix", "(a), (b)…: cells of a row sharing a letter have overlapping "
             "intervals, so this run cannot tell them apart"]
    if any(c.imprecise for c in cells) and target is not None:
        notes.append(f"{IMPRECISE_MARK} the interval is wider than the run's precision target, or the cell "
                     "has too few samples for one")
    if any(c.ok and not c.verified for c in cells):
        notes.append(f"{UNVERIFIED_MARK} verification found problems (see the full table)")
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


def full_table(cells: list[CellStats]) -> str:
    header = ["framework", "server", "db", "ins/req", "µs/insert median [95% interval] (min–max)", "µs/request",
              "user / system µs/insert", "PG µs/insert", "stmts/insert", "xacts/insert", "req/s",
              "p50 / p99 ms", "loadgen µs/req", "errors", "verified", "inserts/s per core", "cores for 10k/s"]
    rows = []
    for c in cells:
        key = [c.key.framework, c.key.server, c.key.db, _per_request(c)]
        if not c.ok:
            rows.append([*key, f"**{c.status}**: {md_text(c.reason or '')}"] + [""] * (len(header) - 5))
            continue
        m = c.median
        rows.append([*key, f"{cpu_cell(c)} ({short(c.cpu_min)}–{short(c.cpu_max)}, {c.repeats} samples)",
                     short(m.server_cpu_us_per_request),
                     f"{short(m.user_us_per_insert)} / {short(m.system_us_per_insert)}",
                     short(m.pg_cpu_us_per_insert), per_insert(m.statements_per_insert),
                     per_insert(m.transactions_per_insert), count(m.rps), f"{short(m.p50_ms)} / {short(m.p99_ms)}",
                     short(m.loadgen_cpu_us_per_request), count(c.errors),
                     "yes" if c.verified else f"**no** {UNVERIFIED_MARK}", count(c.inserts_per_core_s),
                     cores(c.cores_for_10k)])
    text = table(header, rows, "llll" + "r" * (len(header) - 4))
    problems = [f"- `{c.key.label}`: {md_text('; '.join(c.verify_errors))}" for c in cells if c.ok and not c.verified]
    return text + ("\n\nVerification problems:\n\n" + "\n".join(problems) if problems else "")


def _per_request(c: CellStats) -> str:
    """inserts per request, with the shape where it is not the plain one and the interpreter where not the run's."""
    text = str(c.key.inserts_per_request) + ("" if c.key.shape == "one" else f" {c.key.shape}")
    return text + (f" @{c.key.python}" if c.key.python else "")


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
    commit = env.get("git_commit")
    add("Commit", f"{commit[:12]}{' (uncommitted changes)' if env.get('git_dirty') else ''}" if commit else None)
    add("Date", env.get("date"))
    add("Run", run.run_id)
    return "\n".join(lines) + ("\n\n" if lines else "") + CPU_DEFINITION


def markdown(run: Run, cells: list[CellStats]) -> str:
    own = _own_report.section(run, cells)  # a user's app (--app), apart from the matrix
    everything, cells = cells, _own_report.split(cells)[1]
    if own and not cells:
        return "\n\n".join([f"# insertbench run {run.run_id}", f"## Your app\n\n{own}",
                             *filter(None, [profile_part(everything)]),
                             "## Environment and method\n\n" + environment_section(run)]) + "\n"
    not_ok = [f"`{c.key.label}` ({c.status})" for c in cells if not c.ok]
    left_out = ", ".join(not_ok) if len(not_ok) <= 6 else f"{len(not_ok)} failed or missing cells (see below)"
    optional = [("What to change", _answer.what_to_change(cells)),
                ("Interpreters", _answer.interpreter_section(cells, run.environment, run.options)),
                ("What reading the request body costs", _answer.body_read_section(cells))]
    checks = _answer.cross_checks(cells)
    sections = [
        f"# insertbench run {run.run_id}",
        "## The answer\n\n" + "\n\n".join(filter(None, [_answer.headline(cells), answer(cells)])),
        *([f"## Your app\n\n{own}"] if own else []),
        *(f"## {title}\n\n{text}" for title, text in optional[:1] if text),
        "## Server CPU per insert\n\n" + grids(cells)
        + "\n\n![Server CPU per insert, every cell](cpu_per_insert.png)\n\nBars: median; whiskers: the 95% "
        "interval (min–max for a cell with too few samples for one)."
        + (f" Not in the chart: {left_out}." if left_out else ""),
        *(f"## {title}\n\n{text}" for title, text in optional[1:] if text),
        *filter(None, [profile_part(everything)]),
        "## Every cell\n\n" + full_table(cells),
        "## Where the CPU goes, layer by layer\n\n" + attribution_table(attribution(cells))
        + "\n\n![Layer attribution](attribution.png)",
        *instructions_sections(cells, run.options),
        "## The original app\n\n" + handler_section(cells, run.options),
        *([f"## Cross-checks\n\n{checks}"] if checks else []),
        "## Environment and method\n\n" + environment_section(run),
    ]
    return "\n\n".join(sections) + "\n"


def instructions_sections(cells: list[CellStats], options: Mapping[str, Any]) -> list[str]:
    """The instruction grids and the layer attribution in instructions, when the run counted any."""
    grids_text = instruction_grids(cells, options)
    if grids_text is None:
        return []
    rows = attribution(cells, instructions_of)
    return ["## Instructions per insert\n\n" + grids_text,
            "## Where the instructions go, layer by layer\n\n" + attribution_table(rows, "Instructions", mega)]


def profile_rows(cells: list[CellStats]) -> list[tuple]:
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


def profile_part(cells: list[CellStats]) -> str | None:
    """The section "Where the CPU goes", with what the profiler cost and where it could not attach."""
    rows = profile_rows(cells)
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


def csv_text(cells: list[CellStats], own_python: str = "",
             per_request: Mapping[Any, tuple[float | None, float | None]] | None = None) -> str:
    """One row per cell; ``per_request`` gives each cell's rows and statements per request (the last columns)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEAD + [n for n, _, _ in CSV_NUMBERS] + ["reason"]
                    + [n for n, _, _ in CSV_EXTRA + CSV_INSTRUCTIONS] + ["rows_per_request", "statements_per_request"])
    for c in cells:
        values = {name: "" if not c.ok or (v := get(c)) is None else format(v, spec)
                  for name, get, spec in CSV_NUMBERS + CSV_EXTRA}
        values |= {name: "" if c.instructions is None or (v := get(c)) is None else format(v, spec)
                   for name, get, spec in CSV_INSTRUCTIONS}
        writer.writerow([c.key.framework, c.key.server, c.key.db, c.key.inserts_per_request, c.key.shape,
                         c.key.python or own_python, c.status,
                         "true" if c.verified else "false", *(values[n] for n, _, _ in CSV_NUMBERS),
                         " ".join((c.reason or "").split()),
                         *(values[n] for n, _, _ in CSV_EXTRA + CSV_INSTRUCTIONS),
                         *("" if v is None or not c.ok else f"{v:.4f}"
                           for v in (per_request or {}).get(c.key, (None, None)))])
    return out.getvalue()


def render(run_dir: Path) -> list[Path]:
    """Write matrix.csv, matrix.md, the charts (and profile.csv when cells were profiled) from run_dir's run.json."""
    run_dir = Path(run_dir)
    run = load_run(run_dir / "run.json")
    cells = run_cells(run)
    csv_path, md_path = run_dir / "matrix.csv", run_dir / "matrix.md"
    write_atomically(csv_path, csv_text(cells, str(run.environment.get("python") or ""),
                                        _own_report.per_request(run)))
    write_atomically(md_path, markdown(run, cells))
    cells = _own_report.split(cells)[1]  # the charts are the matrix's
    written = [csv_path, md_path, _charts.cpu_per_insert_chart(cells, run_dir / "cpu_per_insert.png"),
               _charts.attribution_chart(attribution(cells), cells, run_dir / "attribution.png")]
    if found := ladders(cells):
        written.append(_charts.waterfall_chart(found, run_dir / "what_to_change.png"))
    if rows := profile_rows(cells):
        write_atomically(run_dir / "profile.csv", profile_csv(rows))
        written += [run_dir / "profile.csv", profile_chart(rows, run_dir / "profile.png")]
    return written


def update_readme(readme: Path, run_dir: Path) -> bool:
    """Put this run's answer and grids between the README's results markers. True if the README changed."""
    readme, run_dir = Path(readme), Path(run_dir)
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(RESULTS_START), text.find(RESULTS_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no results section: add a line {RESULTS_START} and, below it, a line "
                         f"{RESULTS_END} where the results should go, then run again.")
    run = load_run(run_dir / "run.json")
    cells = run_cells(run)
    link = Path(os.path.relpath(run_dir / "matrix.md", readme.parent)).as_posix()
    steps = _answer.what_to_change(cells)
    chart = Path(os.path.relpath(run_dir / "what_to_change.png", readme.parent)).as_posix()
    steps = steps.replace("](what_to_change.png)", f"]({chart})") if steps else None
    parts = [_answer.headline(cells), answer(cells), f"### What to change\n\n{steps}" if steps else None,
             "### Server CPU per insert\n\n" + grids(cells)]
    section = ("\n\n".join(p for p in parts if p) + f"\n\nEvery cell, the interpreters, the charts, the layer "
               f"attribution and the environment of run {run.run_id}: [{link}]({link})")
    new = f"{text[: start + len(RESULTS_START)]}\n{section}\n{text[end:]}"
    if new == text:
        return False
    write_atomically(readme, new)
    return True


def newest_run(results_dir: Path) -> Path:
    """The run directory under results_dir with the greatest run id (run ids start with the UTC time)."""
    runs = sorted(p.parent for p in Path(results_dir).glob("*/run.json"))
    if not runs:
        raise FileNotFoundError(f"No run in {results_dir} (no */run.json there): run the benchmark first "
                                "(`nox -s bench`), or pass a run directory.")
    return runs[-1]


def terminal_table(run: Run | Mapping[str, Any]) -> str:
    """A compact plain-text table for the end of a run. Takes a Run or the run.json dict."""
    cells = run_cells(run if isinstance(run, Run) else Run.from_dict(run))
    rows = [["framework", "server", "db", "ins/req", "status", "µs/insert [95% interval]", "req/s", "errors",
             "verified"]]
    for c in cells:
        figures = ["", "", "", ""]
        if c.ok:
            figures = [cpu_cell(c), count(c.median.rps),
                       count(c.errors), "yes" if c.verified else "NO"]
        rows.append([c.key.framework, c.key.server, c.key.db, _per_request(c), c.status, *figures])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    numeric = (3, 5, 6, 7)

    def line(row: list[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(v.rjust(w) if i in numeric else v.ljust(w) for i, (v, w) in enumerate(cells))

    lines = [line(r).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{c.status}: {c.key.label}: {clip(c.reason or '')}" for c in cells if not c.ok]
    notes += [f"not verified: {c.key.label}: {clip('; '.join(c.verify_errors))}" for c in cells
              if c.ok and not c.verified]
    if any(c.imprecise for c in cells):
        notes.append(f"{IMPRECISE_MARK} interval wider than the precision target (or too few samples)")
    return "\n".join(lines + ([""] + notes if notes else []))
