"""Planning a run: the options asked for, the cells they make, and what to measure next.

``resolve_options`` turns the command line into the run's options (what was asked, the ``--quick`` or
usual defaults for the rest); ``plan`` turns them into cells, every asked combination an app supports,
and for the default run the cells that answer the question as asked (``QUESTION``). While the run goes,
the todo lists say which samples are still wanted: ``base_todo`` the minimum (``--repeats`` CPU samples of
every cell, interleaved), ``imprecise_todo`` one more for each cell whose confidence interval is still
wider than ``--precision`` (up to ``MAX_REPEATS``), ``window_todo`` the callgrind and profiled windows.
Nothing here starts a server or a database; only the interpreters are asked what they are (``pythons``).
"""

from __future__ import annotations

import argparse

from harness import axes
from harness.analysis.stats import cell_stats, sample_metrics
from harness.axes import SERVERS
from harness.errors import UsageError
from harness.measure.apps import App
from harness.measure.postgres import redact
from harness.measure.servers import READY_TIMEOUT
from harness.model import Cell, Run

DEFAULTS = {"repeats": 3, "duration": 2.0, "warmup": 0.5, "concurrency": 64, "workers": 1, "precision": 5.0,
            "budget": 11.0, "instruction_requests": 1000, "instruction_concurrency": 4, "instruction_warmup": 2.0,
            "profile_duration": 4.0, "ready_timeout": READY_TIMEOUT}
QUICK = {"repeats": 1, "duration": 1.0, "warmup": 0.5, "budget": 0.0, "instruction_requests": 300}
MAX_REPEATS = 15  # extra samples stop here even if a cell's interval is still wide


def _choose(kind: str, asked: list[str] | None, valid: list[str]) -> list[str]:
    if not asked:
        return list(valid)
    unknown = [name for name in asked if name not in valid]
    if unknown:
        raise UsageError(f"unknown {kind} {', '.join(unknown)}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(asked))


# The default run answers the question as asked: the original app and the bare apps (ASGI and its RSGI twin) on
# every layer under uvicorn and on the raw ones (``raw``) under every server (the layer attribution), FastAPI on
# every layer under uvicorn, every other framework on `coalesced` (its cheapest layer here) under every server,
# the floor; the original app writing ten rows per request one by one (the start of the ladders for ten inserts),
# the bare apps' GET forms beside their POST forms, the knobs' cells (``knobs``: each beside the same cell
# without it). The ladders add their own cells as the run goes (``ladder_cells``: every knob on the original
# app, then each step's candidates, and the cheapest cell under every other interpreter). --matrix measures
# every framework on every layer besides.
QUESTION = {"inserts": 10, "frameworks": ("seed",), "servers": ("uvicorn",), "db": ("orm",), "shapes": ("each",),
            "every_layer": ("seed", "asgi", "rsgi", axes.FLOOR), "uvicorn_layers": ("fastapi",),
            "others": ("coalesced",), "raw": ("none", "asyncpg", "coalesced"),
            "knobs": (("fastapi", "uvicorn", "core", "autocommit"), ("fastapi", "uvicorn", "asyncpg", "transaction"),
                      ("asgi", "uvicorn", "asyncpg", "reset"), ("fastapi", "uvicorn", "asyncpg", "response"),
                      ("fastapi", "uvicorn", "asyncpg", "model"), ("seed", "uvicorn", "orm", "gcoff"),
                      ("seed", "uvicorn", "orm", "pre_ping"),
                      ("seed", "uvicorn", "orm", "pins2025"), ("rsgi", "granian-rsgi", "asyncpg", "pool4"))}
MAX_LADDER_CELLS = 48  # the ladders add at most this many cells, whatever the numbers say


def _default_run(args: argparse.Namespace) -> bool:
    chosen = ("frameworks", "servers", "db", "inserts", "shapes", "python", "app", "knobs", "soak")
    return not args.quick and not any(getattr(args, name, None) for name in chosen)


def in_default_run(cell: Cell, options: dict) -> bool:
    """Whether the default run measures this cell of the matrix (--matrix measures them all)."""
    return (options.get("matrix") or not options.get("question") or cell.db in QUESTION["others"]
            or cell.framework in QUESTION["every_layer"] and (cell.server == "uvicorn" or cell.db in QUESTION["raw"])
            or cell.framework in QUESTION["uvicorn_layers"] and cell.server == "uvicorn")


def _valgrind() -> bool:
    import shutil

    return all(shutil.which(tool) for tool in ("valgrind", "callgrind_control"))


def _interpreters(args: argparse.Namespace, question: bool) -> list[dict]:
    """The interpreters the run serves on, the baseline first: --python's, or the harness's own and, for the
    default run, every other CPython ≥ 3.11 found."""
    from harness.measure import pythons as _pythons

    if getattr(args, "python", None):
        chosen = _pythons.resolve(args.python)
    else:
        chosen = [_pythons.own(), *(_pythons.discover() if question else [])]
    return [i.describe() | {"python": ""} for i in chosen]


def layers_of(apps: dict[str, App]) -> list[str]:
    """The shared layers in the registry's order, then the layers only some app has (``OWN_LAYERS``)."""
    return list(dict.fromkeys([*axes.LAYERS, *(layer for app in apps.values() for layer in app.db_layers)]))


def resolve_options(args: argparse.Namespace, apps: dict[str, App]) -> dict:
    """The run's options: what was asked, the --quick or usual defaults for the rest."""
    defaults = DEFAULTS | (QUICK if args.quick else {})
    question = _default_run(args)
    beside = getattr(args, "app", None) and not args.frameworks and not args.db  # your app beside fastapi/orm
    options = {
        "frameworks": ["fastapi"] if beside else _choose("framework", args.frameworks, list(apps)),
        "servers": _choose("server", args.servers, list(SERVERS)),
        "db": ["orm"] if beside else _choose("database layer", args.db, layers_of(apps)),
        "inserts": args.inserts or [1],
        "shapes": _choose("shape", getattr(args, "shapes", None), list(axes.SHAPES[1:]))
        if getattr(args, "shapes", None) else ["bulk", "each"],
        "pythons": _interpreters(args, question),
        "knobs": _choose("knob", getattr(args, "knobs", None), list(axes.KNOBS)) if getattr(args, "knobs", None)
        else [],
        "python_asked": bool(getattr(args, "python", None)),
        "question": question,
        "matrix": bool(getattr(args, "matrix", False)),
        "rate": args.rate,
        "quick": args.quick,
        "durable": args.durable,
        "instructions": args.instructions,
        "profile": args.profile,
        "dsn": redact(args.dsn) if args.dsn else None,
        "ladder_instructions": question and _valgrind(),
    }
    for name, default in defaults.items():
        value = getattr(args, name, None)
        options[name] = default if value is None else value
    if options["warmup"] < 0:
        raise UsageError("--warmup takes seconds, 0 or more")
    return options


def plan(options: dict, apps: dict[str, App]) -> list[Cell]:
    """Every asked combination an app supports (the others, such as the seed beyond `orm`, are skipped), and for
    the default run the cells that answer the question (``QUESTION``); with --python, under each interpreter."""
    labels = [p["label"] for p in options.get("pythons") or [{"label": ""}]] if options.get("python_asked") else [""]
    shapes = options.get("shapes") or ["bulk"]
    cells = [Cell(f, s, db, n, shape, python) for python in labels for n in options["inserts"]
             for f in options["frameworks"] for s in options["servers"] for db in options["db"]
             for shape in (["one", *(["get"] if "get" in shapes else [])] if n == 1 else shapes)
             if apps[f].supports(db, n, shape) and apps[f].serves_under(s)
             and in_default_run(Cell(f, s, db), options)]
    if options.get("question"):
        q = QUESTION
        cells += [Cell(f, s, db, q["inserts"], shape) for f in q["frameworks"] for s in q["servers"] for db in q["db"]
                  for shape in q["shapes"] if f in apps and apps[f].supports(db, q["inserts"], shape)
                  and apps[f].serves_under(s)]
        cells += [Cell(f, s, "none", 1, "get") for f in apps for s in options["servers"]
                  if apps[f].supports("none", 1, "get") and apps[f].serves_under(s)]
        cells += [Cell(f, s, db, knob=knob) for f, s, db, knob in q["knobs"]
                  if f in apps and apps[f].supports(db) and apps[f].serves_under(s) and apps[f].takes(knob, db)]
    cells += [cell.but(knob=name) for name in options.get("knobs") or () for cell in cells
              if not cell.knob and apps[cell.framework].takes(name, cell.db, cell.shape)]
    if not cells:
        supported = ", ".join(f"{a.name}: {'/'.join(a.db_layers)}" for a in apps.values())
        raise UsageError(f"nothing to run: no chosen framework supports the chosen layers ({supported})")
    return list(dict.fromkeys(cells))


def ladder_cells(run: Run, apps: dict[str, App]) -> list[Cell]:
    """For the default run, once every cell has a sample: the cells the in-stack ladders need next (each knob on
    the original app, then the knobs that saved added to where the ladder stands), and the cheapest cell that
    stores its rows (one insert per request, the run's own interpreter) under every other interpreter, so the
    ladder's last rung is measured."""
    if not run.options.get("question"):
        return []
    from harness.analysis.ladder import beyond_start, beyond_wanted, in_stack_wanted, mirrored, seed_starts

    stats = [cell_stats(c, run.of(c)) for c in run.cells]
    servers = run.options.get("servers") or list(SERVERS)
    starts = seed_starts(run.cells)
    wanted = [k for one in starts[:1] if one.inserts_per_request == 1
              for k in [*in_stack_wanted(stats, one), *beyond_wanted(stats, beyond_start(stats, one), servers),
                        *(k for many in starts[1:] for k in mirrored(stats, one, many))]]
    wanted = [k for k in dict.fromkeys(wanted) if k not in run.cells and k.framework in apps
              and apps[k.framework].supports(k.db, k.inserts_per_request, k.shape)
              and apps[k.framework].serves_under(k.server) and apps[k.framework].takes(k.knob, k.db, k.shape)]
    added = wanted[:max(0, MAX_LADDER_CELLS - run.options.setdefault("ladder_cells", 0))]
    run.options["ladder_cells"] += len(added)
    pythons = [p["label"] for p in run.options.get("pythons") or []][1:]
    measured = [(sample_metrics(s).server_cpu_us_per_insert, c) for c in run.cells
                if c.db != "none" and c.shape == "one" and not c.python and not c.knob
                for s in run.of(c)[:1] if s.ok and s.verified]
    measured = [(us, c) for us, c in measured if us]
    if pythons and measured:
        cheapest = min(measured, key=lambda m: m[0])[1]
        added += [cheapest.but(python=label) for label in pythons if cheapest.but(python=label) not in run.cells]
    return added


def full_matrix(run: Run, apps: dict[str, App]) -> bool:
    """Whether the run measured the whole default matrix, not a selection or a quick look: a default run (its
    options say so since schema 3), or, for an older run, one with every cell today's apps and servers make."""
    if "question" in run.options:
        return bool(run.options["question"])
    default = {Cell(f, s, db) for f, app in apps.items() for s in SERVERS for db in axes.LAYERS
               if app.supports(db, 1, "one") and app.serves_under(s) and f != axes.FLOOR}
    return not run.options.get("quick") and set(run.cells) >= default


def base_todo(run: Run) -> list[tuple[Cell, str, int]]:
    """The minimum: ``repeats`` CPU samples of every cell, interleaved, less those already measured."""
    done = run.done()
    return [(cell, "cpu", repeat) for repeat in range(run.options["repeats"]) for cell in run.cells
            if (cell, "cpu", repeat) not in done]


def window_todo(run: Run) -> list[tuple[Cell, str, int]]:
    """One callgrind and one profiled window per cell, when the run asks for them; for the default run, a callgrind
    window for every cell on the ladders (where valgrind is there: ``ladder_instructions``), so each step's
    instructions are counted beside its CPU time."""
    done = run.done()
    kinds = [kind for kind in axes.KINDS if kind not in ("cpu", axes.SOAK) and run.options.get(kind)]
    todo = [(cell, kind, 0) for kind in kinds for cell in run.cells if (cell, kind, 0) not in done]
    if run.options.get("question") and run.options.get("ladder_instructions") and not run.options.get("instructions"):
        todo += [(cell, "instructions", 0) for cell in ladder_rungs(run) if (cell, "instructions", 0) not in done]
    return todo


def ladder_rungs(run: Run) -> list[Cell]:
    """The cells the one-insert ladders stand on, as the samples measured so far place them."""
    from harness.analysis.ladder import in_stack_ladders, ladders

    stats = [cell_stats(c, run.of(c)) for c in run.cells]
    stood = [r.cell.key for lad in [*in_stack_ladders(stats), *ladders(stats)] for r in lad.rungs
             if lad.inserts_per_request == 1]
    return [c for c in dict.fromkeys(stood) if c in run.cells]


def imprecise_todo(run: Run) -> list[tuple[Cell, str, int]]:
    """One more CPU sample for each cell whose interval is wider than the target, widest first."""
    target = run.options.get("precision", DEFAULTS["precision"]) / 100
    wanted = []
    for cell in run.cells:
        samples = run.of(cell)
        stats = cell_stats(cell, samples, target)
        if stats.ok and stats.imprecise and len(samples) < MAX_REPEATS:
            wanted.append((-(stats.precision or 1.0), cell, len(samples)))
    return [(cell, "cpu", repeat) for _, cell, repeat in sorted(wanted, key=lambda w: w[0])]
