"""The report's sections that answer the question as asked: what to change, interpreters, the body read, and the
cross-checks that make the figures believable. Markdown from a run's cells (``analysis.ladder`` does the
arithmetic)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness import axes
from harness.analysis.checks import (
    AHEAD,
    WAITED,
    Margin,
    body_reads,
    busy_cores,
    floor_gaps,
    interpreters,
    knobs,
    loadgen_margin,
    statements,
    waited,
)
from harness.analysis.ladder import Ladder, removed_under
from harness.analysis.stats import TARGET_INSERTS_PER_S, CellStats, cheapest_verified
from harness.report.format import table
from harness.report.format import us as _us
from harness.report.format import us_interval as _interval


def _signed(saving: float) -> str:
    """A saving as the change it is: −x where it saves, +x where it costs."""
    return f"−{_us(saving)}" if saving >= 0 else f"+{_us(-saving)}"


def laddertable(ladder: Ladder) -> str:
    rows = []
    for i, r in enumerate(ladder.rungs):
        saving = "—" if r.saving is None else _signed(r.saving) + (
            " (within noise)" if not r.distinct else " (instructions)" if r.rests_on == "instructions" else "")
        m = r.cell.median
        rows.append([str(i), r.change, f"`{r.cell.key.label}`", f"{_us(r.us)}{_interval(r.cell)}", saving,
                     f"{r.ratio:.1f}×", _figure(r.cell.instructions_per_insert),
                     _figure(m.statements_per_insert if m else None, ",.2g"),
                     _figure(m.server_rss_end_mib if m else None, ",.0f"),
                     f"{r.cores:.2f}" if r.cores is not None else "n/a"])
    header = ["step", "change", "cell", "µs per insert [95%]", "saves µs", "vs original", "instructions per insert",
              "statements per insert", "server MiB", "cores for 10k/s"]
    text = table(header, rows, "rllrrrrrrr")
    if ladder.not_taken:
        text += "\n\nNot taken, because they cost more where they were tried: " + "; ".join(ladder.not_taken) + "."
    if ladder.note:
        text += "\n\n" + ladder.note
    under = under_words(ladder)
    return text + "\n\n" + under if under else text


def under_words(ladder: Ladder) -> str | None:
    """What each step took away, from the profiles of the cells on both sides of it: the packages it removes and
    the CPU that ran under them (their frames and all they call) before, beside what the step saved."""
    said = []
    for i, (before, after) in enumerate(zip(ladder.rungs, ladder.rungs[1:], strict=False), start=1):
        removed = removed_under(before.cell, after.cell)
        if removed and after.saving is not None:
            under = ", ".join(f"{package} ({_us(us)} µs per insert ran under it)" for package, us in removed)
            said.append(f"step {i} removes {under} in `{before.cell.key.label}` and saved {_us(after.saving)}")
    if not said:
        return None
    return ("From the profiles (a package's inclusive share: its frames and everything they call): "
            + "; ".join(said) + ". What a step saves can be less than what ran under the packages it removes: the "
            "code it lands on does part of that work its own way.")


def _figure(value: float | None, digits: str = ",.0f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{digits}}{suffix}"


def in_stack_table(ladder: Ladder) -> str:
    """The in-stack ladder: each knob with its code, what it saved and what shows it, and the cell's figures."""
    rows = []
    for i, r in enumerate(ladder.rungs):
        knob = axes.KNOBS.get(r.knob)
        saving = "—" if r.saving is None else f"−{_us(r.saving)}" + (f" ({r.rests_on})" if r.rests_on else "")
        m = r.cell.median
        rows.append([str(i), r.change, f"`{knob.code}`" if knob else "—", f"{_us(r.us)}{_interval(r.cell)}", saving,
                     _figure(r.cell.instructions_per_insert), _figure(m.statements_per_insert if m else None, ",.2g"),
                     _figure(m.server_rss_end_mib if m else None, ",.0f"),
                     f"{r.cores:.2f}" if r.cores is not None else "n/a"])
    header = ["step", "change", "code", "µs per insert [95%]", "saves µs (shown by)", "instructions per insert",
              "statements per insert", "server MiB", "cores for 10k/s"]
    text = table(header, rows, "lllrrrrrr")
    if ladder.alone:
        tried = [[t.cell.key.knob, axes.KNOBS[t.knob].change, f"`{axes.KNOBS[t.knob].code}`",
                  f"{_us(t.cell.us_per_insert)}{_interval(t.cell)}", _signed(-t.delta),
                  _figure(t.cell.instructions_per_insert), t.why] for t in ladder.alone]
        text += "\n\nMeasured alone from the original app, and not taken:\n\n" + table(
            ["knob", "change", "code", "µs per insert [95%]", "vs step 0, µs", "instructions per insert", "why not"],
            tried, "lllrrrl")
    return text


def _per(ladder: Ladder) -> str:
    if ladder.inserts_per_request == 1:
        return "One insert per request"
    return (f"{ladder.inserts_per_request} inserts per request (the original app's handler runs its INSERT "
            f"{ladder.inserts_per_request} times in one transaction)")


def in_stack_section(found: list[Ladder]) -> str | None:
    """Keeping FastAPI + SQLAlchemy: the original app with one knob more per step."""
    if not found or all(len(lad.rungs) < 2 and not lad.not_taken for lad in found):
        return None
    parts = ["**Keeping FastAPI + SQLAlchemy.** Each step is the original app's published code with one more "
             "change a user can copy (the code column), cumulative, every combination measured in this run; a step "
             "is taken only where it saves beyond the noise: at least 5% of the last step's CPU per insert (less "
             "does not repeat from one run to the next here), shown by its 95% interval below the last step's (CPU "
             "time) or, where both were counted under callgrind, by more than 3% fewer instructions. CPU time "
             "comes first because it also sees the kernel's work (fewer round trips) and the collector under "
             "load, which instructions at low concurrency do not. Knobs that saved nothing beyond the noise "
             "alone are not tried in combination."]
    for ladder in found:
        parts.append(f"**{_per(ladder)}, in the stack**\n\n" + in_stack_table(ladder))
    return "\n\n".join(parts)


def what_to_change(found: list[Ladder], in_stack: list[Ladder] | None = None) -> str | None:
    if not found:
        return None
    parts = [in_stack_section(in_stack or [])] if in_stack_section(in_stack or []) else []
    if parts:
        parts.append("**Beyond the stack.** The original app as published again, now changing what it is built on.")
    parts += ["Starting from the original app, each step takes the change that saves the most server CPU per "
             "insert from where the previous step left off, among the changes this run measured, a step the figures "
             "show beyond the noise before any other; \"within noise\" marks a step that saves less than 5% of "
             "the cell before it, or whose cell's 95% interval overlaps that one's (and, where both were counted, "
             "whose instructions differ by less than 3%), "
             "\"(instructions)\" one whose intervals overlap but whose instructions show it. Cores for "
             f"{TARGET_INSERTS_PER_S:,} inserts/s = µs per insert ÷ 100."]
    for ladder in found:
        parts.append(f"**{_per(ladder)}**\n\n" + laddertable(ladder))
    parts.append("![What to change, step by step](what_to_change.png)")
    return "\n\n".join(parts)


def headline(found: list[Ladder], in_stack: list[Ladder] | None = None) -> str | None:
    """Two sentences: what the original app costs, and where the ladders end (in the stack, then beyond it)."""
    if not found:
        return None
    one = found[0]
    inside = next((lad for lad in in_stack or [] if lad.inserts_per_request == one.inserts_per_request), None)
    start, end = (inside.rungs[0] if inside else one.rungs[0]), one.rungs[-1]
    text = (f"**Is 1–2 ms of CPU per insert normal for FastAPI + SQLAlchemy `AsyncSession`?** Here the original "
            f"app costs **{_us(start.us)} µs** of server CPU per insert ({start.cores:.1f} cores for "
            f"{TARGET_INSERTS_PER_S:,} inserts/s).")
    if inside is not None and len(inside.rungs) > 1:
        kept = inside.rungs[-1]
        text += (f" Keeping FastAPI and SQLAlchemy, {len(inside.rungs) - 1} change"
                 f"{'s' if len(inside.rungs) > 2 else ''} to its code take{'' if len(inside.rungs) > 2 else 's'} it "
                 f"to **{_us(kept.us)} µs** "
                 f"({kept.ratio:.1f}× less).")
    count = len(one.rungs) - 1 + (len(inside.rungs) - 1 if inside else 0)
    if len(one.rungs) > 1:
        steps = f"{count} change" + ("s" if count > 1 else "")
        text += (f" The same insert costs **{_us(end.us)} µs** after the {steps} below (**{end.ratio:.1f}× less**, "
                 f"{end.cores:.2f} cores).")
    many = next((lad for lad in found if lad.inserts_per_request > 1), None)
    if many is not None:
        first = next((lad.rungs[0] for lad in in_stack or [] if lad.inserts_per_request == many.inserts_per_request),
                     many.rungs[0])
        text += (f" With {many.inserts_per_request} inserts per request, one by one, the original handler costs "
                 f"{_us(first.us)} µs per insert")
        text += (f"; the steps below take that to {_us(many.rungs[-1].us)} ({many.rungs[-1].ratio:.1f}× less)."
                 if many.rungs[-1].us < first.us else "; no measured step below saves on it.")
    return text


def interpreter_section(cells: list[CellStats], environment: Mapping[str, Any],
                        options: Mapping[str, Any]) -> str | None:
    pythons = list(options.get("pythons") or [])
    baseline = pythons[0]["label"] if pythons else ""
    rows = interpreters(cells, baseline)
    if not rows:
        return None
    names = {p["label"]: p for p in pythons}

    def name(label: str) -> str:
        p = names.get(label) or {}
        build = p.get("build") or {}
        what = "PGO" if build.get("configure_pgo") else "no PGO"
        libpython = f", libpython {build['libpython']}" if build.get("libpython") else ""
        version = p.get("version") or environment.get("python") or label
        return f"{version} (`{p.get('base', '?')}`; {what}{libpython})"

    body = [[f"`{v.cell.key.but(python='').label}`", name(v.cell.key.python),
             f"{_us(v.baseline.us_per_insert)}{_interval(v.baseline)}",
             f"{_us(v.cell.us_per_insert)}{_interval(v.cell)}",
             f"{v.ratio:.2f}×" + ("" if v.distinct else " (within noise)")] for v in rows]
    header = ["cell", "interpreter", f"µs per insert on {name(baseline).split(' (')[0]}", "µs per insert on it",
              "ratio"]
    debian = any(str(p.get("base", "")).startswith("/usr/bin/python3") for p in pythons)
    note = (" Debian's `/usr/bin/python3.X` is built with PGO and LTO although its configure flags do not say so "
            "(its libpython is static)." if debian else "")
    return ("Each cell served by another Python, in samples interleaved with the rest of the run, beside the same "
            f"cell on the baseline, {name(baseline)}.{note}\n\n" + table(header, body, "llrrr"))


def knob_section(cells: list[CellStats]) -> str | None:
    """Each knob's cells beside the same cells without it: the change, its code, and what it did."""
    rows = knobs(cells)
    if not rows:
        return None
    body, named = [], {}
    for v in rows:
        knob = axes.KNOBS.get(v.cell.key.knob)
        named[v.cell.key.knob] = knob
        body.append([f"`{v.baseline.key.label}`", f"`{v.cell.key.knob}`",
                     f"{_us(v.baseline.us_per_insert)}{_interval(v.baseline)}",
                     f"{_us(v.cell.us_per_insert)}{_interval(v.cell)}",
                     f"{v.ratio:.2f}×" + ("" if v.distinct else " (within noise)"),
                     f"{v.baseline.median.statements_per_insert or 0:.3g} → "
                     f"{v.cell.median.statements_per_insert or 0:.3g}"])
    changes = "\n".join(f"- `{name}`: {knob.change if knob else 'a knob this harness no longer knows'}"
                         + (f": `{knob.code}`" if knob else "") for name, knob in named.items())
    header = ["cell", "knob", "µs per insert without [95%]", "with it [95%]", "ratio", "statements per insert"]
    return ("Changes a user can copy into their own app, each measured beside the same cell without it, in "
            f"samples interleaved with the rest of the run:\n\n{changes}\n\n" + table(header, body, "llrrrl"))


def body_read_section(cells: list[CellStats]) -> str | None:
    rows = body_reads(cells)
    if not rows:
        return None
    body = []
    for v in rows:
        post, get = v.cell.median.server_cpu_us_per_request, v.baseline.median.server_cpu_us_per_request
        body.append([f"`{v.cell.key.label}`", f"{_us(get)}{_interval(v.baseline)}", f"{_us(post)}{_interval(v.cell)}",
                     f"{_us(post - get)}" + ("" if v.distinct else " (within noise)")])
    return ("The bare app's insert with its text in the query string (GET: nothing to read) beside the same insert "
            "posted as a 20-odd-byte JSON body (POST, the matrix's form), µs of server CPU per "
            "request. The difference is what receiving a request body, and the app's one awaited `receive()` for "
            "it, costs each server.\n\n"
            + table(["cell", "GET µs/request [95%]", "POST µs/request [95%]", "the body costs"], body, "lrrr")
            + _interface_verdict(rows))


def _interface_verdict(rows: list) -> str:
    """Whether granian's own interface removes the body read's cost its ASGI has, in numbers."""
    cost = {(v.cell.key.server, v.cell.key.knob): (v.cell.median.server_cpu_us_per_request
                                                   - v.baseline.median.server_cpu_us_per_request, v) for v in rows}
    asgi, rsgi, uvicorn = cost.get(("granian", "")), cost.get(("granian-rsgi", "")), cost.get(("uvicorn", ""))
    if not (asgi and rsgi):
        return ""
    verdict = ("removes most of it" if rsgi[0] < asgi[0] / 2 else "does not remove it" if rsgi[0] >= asgi[0] * 0.8
               else "removes part of it")
    text = (f"\n\nUnder granian's own interface, RSGI, reading the body costs {_us(rsgi[0])} µs per request against "
            f"{_us(asgi[0])} under its ASGI: RSGI {verdict}")
    if uvicorn:
        text += f" (uvicorn's ASGI: {_us(uvicorn[0])})"
    return text + ", so the cost is granian's reading of a body, not ASGI's." if verdict == "does not remove it" \
        else text + "."


def loadgen_line(margin: Margin) -> str:
    fastest, loadgen = margin.fastest, margin.loadgen_us
    server = fastest.median.server_cpu_us_per_request
    text = (f"- **The load generator stays ahead.** In the cheapest server's cell, `{fastest.key.label}`, it spent "
            f"{_us(loadgen)} µs of CPU per request against the server's {_us(server)} "
            f"({server / loadgen:.1f}× ahead; the bar is {AHEAD:g}×).")
    if margin.floor is not None and margin.floor.median.rps and fastest.median.rps:
        floor = margin.floor.median
        text += (f" Against the floor's server (`{margin.floor.key.label}`, this run) it drove "
                 f"{floor.rps:,.0f} requests/s at {_us(floor.loadgen_cpu_us_per_request)} µs per request: "
                 f"{floor.rps / fastest.median.rps:.1f}× the cheapest cell's rate, so that cell's rate is the "
                 "server's, not the generator's.")
    if margin.close:
        named = ", ".join(f"`{c.key.label}` {r:.1f}×" for c, r in sorted(margin.close, key=lambda m: m[1])[:8])
        text += f" Cells where the server spent less than {AHEAD:g}× the generator's CPU per request: {named}."
    else:
        text += f" In every cell the server spent at least {AHEAD:g}× the generator's CPU per request."
    return text


def floor_section(cells: list[CellStats], profile_rows: list[tuple] | None = None) -> str | None:
    """Every server × interface's bare cell against the floor, measured in the same run."""
    found = floor_gaps(cells)
    if found is None:
        return None
    floor, gaps = found
    here = floor.median.server_cpu_us_per_request
    body = [[f"`{c.key.label}`", f"{_us(c.median.server_cpu_us_per_request)}{_interval(c)}", f"+{_us(gap)}",
             f"{c.median.server_cpu_us_per_request / here:.1f}×"] for c, gap in gaps]
    cheapest = cheapest_verified(cells)
    text = split_gaps(floor, [c for c, _ in gaps] + ([cheapest] if cheapest else []), profile_rows or [])
    return (f"The floor, `{floor.key.label}`: a raw asyncio Protocol on uvloop that finds each request's end and "
            f"answers it, no HTTP parser, no interface, no JSON, costs **{_us(here)} µs**{_interval(floor)} of "
            "server CPU per request in this run (its loopback TCP and event loop). Each server's bare app, with no "
            "database, above it: what the server's HTTP and its interface (ASGI, RSGI) add.\n\n"
            + table(["cell", "µs per request [95%]", "above the floor", "× the floor"], body, "lrrr")
            + (f"\n\n{text}" if text else ""))


def split_gaps(floor: CellStats, cells: list[CellStats], rows: list[tuple]) -> str | None:
    """Where the profiled cells' CPU above the floor goes, by package (the floor's own packages subtracted)."""
    by_cell: dict[tuple, dict[str, float]] = {}
    for framework, server, db, n, package, _share, us in rows:
        by_cell.setdefault((framework, server, db, n), {})[package] = us
    mine = by_cell.get((floor.key.framework, floor.key.server, floor.key.db, 1))
    lines = []
    for c in cells:
        theirs = by_cell.get((c.key.framework, c.key.server, c.key.db, c.key.inserts_per_request))
        if mine is None or theirs is None or c.key.shape == "get":
            continue
        gap = {p: theirs.get(p, 0.0) - mine.get(p, 0.0) for p in dict.fromkeys([*theirs, *mine])}
        parts = [f"{p} {us:+,.1f}" for p, us in sorted(gap.items(), key=lambda kv: -abs(kv[1])) if abs(us) >= 0.5]
        lines.append(f"- `{c.key.label}`: {sum(gap.values()):+,.1f} µs per request above the floor: "
                     + ", ".join(parts[:6]) + ".")
    if not lines:
        return None
    return ("Where that goes, from the profiled windows (µs per request by package, the cell's minus the floor's; "
            "kernel is system CPU):\n\n" + "\n".join(lines))


def cross_checks(cells: list[CellStats]) -> str:
    parts = []
    busy = busy_cores(cells)
    if busy:
        mid = busy[len(busy) // 2]
        parts.append(f"- **CPU ≈ 1 / throughput.** In a closed loop the server's one core is saturated, so CPU per "
                     f"request × requests/s should be close to one core: here it is {busy[0]:.2f}–{busy[-1]:.2f} "
                     f"(median {mid:.2f}) over {len(busy)} cells. A figure well below one would mean the server "
                     "waited (for PostgreSQL or the load generator), and its CPU per request would not be its cost "
                     "at full load.")
        slow = waited(cells)
        if slow:
            named = [f"`{c.key.label}` {share:.2f}" for c, share in sorted(slow, key=lambda s: s[1])]
            more = f" and {len(named) - 8} more (matrix.csv: rps × server_cpu_us_per_request)" if len(named) > 8 else ""
            parts[-1] += f" Below {WAITED:.0%} of a core here: " + ", ".join(named[:8]) + more + "."
    margin = loadgen_margin(cells)
    if margin:
        parts.append(loadgen_line(margin))
    found = statements(cells)
    if found:
        shown = ", ".join(f"`{db}`{'' if n == 1 else f' ×{n} {shape}'} {v:.3g}" for (db, n, shape), v in sorted(
            found.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])))
        parts.append("- **Statements per insert** (pg_stat_statements, BEGIN and COMMIT included; median over "
                     f"frameworks and servers): {shown}. One INSERT in autocommit is 1; in a transaction 3; "
                     "ten one by one in one transaction 1.2; ten in one statement 0.1 (0.3 with BEGIN/COMMIT); "
                     "coalescing writes many requests' rows per statement.")
    return "\n".join(parts)
