"""The report's part for a user's own app (``--app``): its figures per server, its rows per table, and where
it stands beside the matrix's cells measured under the same server.

An own app's cell (``db == "app"``) counts "per insert" per request (``analysis.own``), so its CPU per request
sits beside the matrix cells' CPU per request, one insert per request each.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.analysis import statements as _statements
from harness.analysis.checks import Versus, knobs
from harness.analysis.own import tables_per_request
from harness.analysis.profile import cell_inclusive
from harness.analysis.stats import TARGET_INSERTS_PER_S, CellStats, main_cells, ratio
from harness.analysis.summary import Analysis
from harness.model import Cell, Run
from harness.report.format import cores, count, interval, md_text, per_insert, short, table
from harness.report.statements import own_part as statements_part

NEIGHBOURS = 2  # matrix cells shown on each side of the app


def _statuses(run: Run, cell: Cell) -> str:
    counts: dict[str, int] = {}
    for s in run.samples:
        if s.cell == cell and s.kind == "cpu":
            for status, n in (s.status_counts or {}).items():
                counts[status] = counts.get(status, 0) + n
    return ", ".join(f"{n:,}× {'no answer' if status == '0' else status}" for status, n in sorted(counts.items()))


def _nearest(own: CellStats, matrix: Iterable[CellStats]) -> list[CellStats]:
    """The matrix's cells under the app's server (one insert per request, the run's interpreter) nearest in CPU."""
    same = sorted((c for c in main_cells(list(matrix)) if c.ok and c.key.server == own.key.server
                   and c.key.inserts_per_request == 1 and c.median.server_cpu_us_per_request),
                  key=lambda c: c.median.server_cpu_us_per_request)
    below = [c for c in same if c.median.server_cpu_us_per_request <= own.median.server_cpu_us_per_request]
    above = same[len(below):]
    return below[-NEIGHBOURS:] + above[:NEIGHBOURS]


def section(analysis: Analysis) -> str | None:
    """## Your app: the figures per server, rows per table, and the endpoint beside the matrix."""
    run, own, matrix = analysis.run, analysis.own, analysis.matrix
    if not own:
        return None
    app = run.options.get("app") or {}
    figures = analysis.per_request
    rows = []
    for c in own:
        if not c.ok:
            rows.append([c.key.server, f"**{c.status}**: {md_text(c.reason or '')}"] + [""] * 8)
            continue
        m = c.median
        needed = ratio(TARGET_INSERTS_PER_S * m.server_cpu_us_per_request, 1e6)
        rows.append([c.key.server, f"**{short(m.server_cpu_us_per_request)}**{interval(c)}",
                     f"{short(m.user_us_per_insert)} / {short(m.system_us_per_insert)}", count(m.rps),
                     f"{short(m.p50_ms)} / {short(m.p99_ms)}", _statuses(run, c.key),
                     per_insert(figures[c.key][1]), per_insert(m.transactions_per_insert),
                     count(c.instructions.instructions_per_request) if c.instructions else "—", cores(needed)])
    header = ["server", "server CPU µs/request [95% interval]", "user / system µs", "req/s", "p50 / p99 ms",
              "statuses", "statements/req", "transactions/req", "instructions/req", "cores for 10k req/s"]
    parts = [f"`{app.get('request', '')}` on `{app.get('module', own[0].key.framework)}:{app.get('attr', 'app')}`"
             f" ({app.get('app_dir', '')}):",
             table(header, rows, "lrrrrlrrrr"), _tables_part(run, own), statements_part(analysis),
             _beside(own, matrix), what_to_try(analysis),
             "Its samples are verified by their status codes (any answer that is not 2xx fails the sample, with "
             "the first such answer) and its rows are counted per table from `pg_stat_statements`; the matrix's "
             "row-by-row check of ids and texts does not apply to tables the harness does not know."]
    return "\n\n".join(p for p in parts if p)


def _tables_part(run: Run, own: list[CellStats]) -> str:

    rows = []
    for c in own:
        for name, kinds in tables_per_request([s for s in run.samples if s.cell == c.key]).items():
            rows.append([f"`{name}`", c.key.server, *(per_insert(kinds[k]) for k in ("inserted", "updated",
                                                                                       "deleted"))])
    if not rows:
        return "No table was written in the measured windows."
    return "Rows per request, by table (median):\n\n" + table(["table", "server", "inserted", "updated", "deleted"],
                                                             rows, "llrrr")


def _beside(own: list[CellStats], matrix: list[CellStats]) -> str:

    lines = []
    for c in (c for c in own if c.ok):
        mine = c.median.server_cpu_us_per_request
        near = _nearest(c, matrix)
        if not near:
            continue
        theirs = [(n.key.label, n.median.server_cpu_us_per_request) for n in near]
        parts = [f"`{label}` {short(us)} µs ({mine / us:.2f}×)" for label, us in theirs]
        lines.append(f"- {c.key.server}: your endpoint {short(mine)} µs per request; " + ", ".join(parts))
    if not lines:
        return ("No matrix cell under the same server in this run to compare with: add some with --frameworks and "
                "--db (an --app run measures fastapi/orm by default).")
    return ("Beside the matrix's nearest cells measured in this run (same server, one insert per request; "
            "your endpoint's CPU per request ÷ theirs in brackets):\n\n" + "\n".join(lines))


# the knob whose measured effect backs a finding of the app's statements: (finding's kind, knob, what it is)
FINDING_KNOBS = (("reset", "reset", "the pool's reset on release"),
                 ("transaction", "autocommit", "autocommit instead of BEGIN … COMMIT around one INSERT"),
                 ("ping", "pre_ping", "the pool's ping before each checkout"))


def _saving(v: Versus, per: str = "insert") -> str:
    delta = v.cell.us_per_insert - v.baseline.us_per_insert
    noise = "" if v.distinct else ", within noise"
    return (f"{short(v.baseline.us_per_insert)} → {short(v.cell.us_per_insert)} µs per {per} "
            f"({delta:+,.1f}, {v.ratio:.2f}×{noise}) at `{v.baseline.key.label}`")


def what_to_try(analysis: Analysis) -> str | None:
    """The app's "what to try", each line backed by this run's figures: its statements by kind beside the matrix's
    measured knob, the collector's knob and the other server measured on the app itself, its profile's largest
    packages."""
    own = [c for c in analysis.own if c.ok]
    if not own:
        return None
    lines = []
    plain = [c for c in own if not c.key.knob]
    first = min(plain or own, key=lambda c: c.key.server != "uvicorn")
    figures = _statements.per_request(s for s in analysis.run.samples if s.cell == first.key)
    pairs = knobs(analysis.matrix)
    if figures:
        kinds = _statements.columns(figures)
        present = {"reset": kinds["reset"] >= 0.5, "ping": kinds["ping"] >= 0.5,
                   "transaction": abs(kinds["insert"] - 1) < 0.05 and kinds["begin"] >= 0.95}
        for kind, knob, what in FINDING_KNOBS:
            if not present[kind]:
                continue
            measured = next((v for v in pairs if v.cell.key.knob == knob), None)
            backing = (f"the matrix's cell without and with `{knob}`, this run: {_saving(measured)}" if measured
                       else f"not measured in this run (add `--knobs {knob}`)")
            lines.append(f"- Your app's requests run {what} ({kinds[kind] if kind != 'transaction' else 3:.3g} "
                         f"statements per request): {backing}.")
    for c in own:
        if c.key.knob and c.key.but(knob="") in {p.key for p in plain}:
            base = next(p for p in plain if p.key == c.key.but(knob=""))
            v = Versus(c, base)
            lines.append(f"- `{c.key.knob}` on your app, no code change ({_knob_code(c.key.knob)}): "
                         f"{_saving(v, 'request')}.")
    servers = sorted(plain, key=lambda c: c.us_per_insert or 0)
    if len(servers) > 1 and servers[0].us_per_insert and servers[-1].us_per_insert:
        lines.append(f"- The server: {servers[0].key.server} {short(servers[0].us_per_insert)} µs per request against "
                     f"{servers[-1].key.server} {short(servers[-1].us_per_insert)} "
                     f"({servers[-1].us_per_insert / servers[0].us_per_insert:.2f}×"
                     f"{'' if Versus(servers[0], servers[-1]).distinct else ', within noise'}).")
    profiled = next((c for c in own if (c.profile or {}).get("profile_shares")), None)
    if profiled is not None:
        top = sorted(profiled.profile["profile_shares"].items(), key=lambda kv: -float(kv[1]))[:4]
        line = ("- Its profile's largest packages (innermost frame, of user CPU): "
                + ", ".join(f"{name} {float(share):.0%}" for name, share in top))
        under = cell_inclusive(profiled)
        if under:
            line += ("; the CPU that runs under each (its frames and all they call, of all the CPU): "
                     + ", ".join(f"{name} {share:.0%}" for name, share in list(under.items())[:5]))
        lines.append(line + ".")
    if not lines:
        return None
    return "What to try, each with what this run measured:\n\n" + "\n".join(lines)


def _knob_code(name: str) -> str:
    from harness import axes

    return " + ".join(f"`{axes.KNOBS[n].code}`" for n in axes.knob_names(name) if n in axes.KNOBS)
