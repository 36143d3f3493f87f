"""The two ladders of "What to change": pure functions of a run's cells.

``in_stack`` starts from the original app as published and adds, one after another, the knob a FastAPI +
SQLAlchemy user can turn (``axes.KNOBS``, ``in_stack``) that saves the most from where it stands, each
combination measured, a step taken only where its figures show it beyond the noise (``beyond_noise``).
``ladder`` goes on from where that ends, beyond the stack, keeping the knobs where they apply (``carry``): the
database layer one step down the chain (AsyncSession → SQLAlchemy Core → the raw driver at equal statements →
coalescing), the transaction's removal, several rows one by one → one statement, another framework, another
server, the server's own interface; the interpreter comes last (a deployment change, measured only at the
ladder's end). A change that would cost more is not taken: it is listed as such. The ``*_wanted`` functions and
``mirrored`` tell the planner which cells the ladders need next. The comparisons beside them are ``checks``'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.analysis.profile import cell_inclusive
from harness.analysis.stats import CellKey, CellStats, cores_needed
from harness.axes import FLOOR, KNOBS, SERVERS, knob_fits, knob_join, knob_names

CHAIN = ("orm", "core", "asyncpg", "coalesced")
CHAIN_TEXT = {"core": "ORM session → SQLAlchemy Core", "asyncpg": "SQLAlchemy Core → raw asyncpg",
              "coalesced": "raw asyncpg → coalescing (one statement per event-loop turn)"}
CHAIN_NAMES = {"orm": "ORM session", "core": "SQLAlchemy Core", "asyncpg": "raw asyncpg", "coalesced": "coalescing"}
INTERFACE_TWINS = {"asgi": "rsgi"}  # a bare app and its twin in another interface (granian-rsgi serves RSGI)
INTERFACE_BARE = ("asgi", "rsgi")  # the bare apps: no framework between the server and the layer
FRAMEWORK_NAMES = {"asgi": "a bare ASGI app", "fastapi": "FastAPI", "starlette": "Starlette",
                   "litestar": "Litestar", "seed": "the original app", "rsgi": "a bare RSGI app", "falcon": "Falcon",
                   "blacksheep": "BlackSheep", "sanic": "Sanic", "django": "Django", "emmett55": "Emmett55",
                   FLOOR: "the floor (a raw uvloop protocol)"}


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: the change, the cell it lands on and what it saved."""

    change: str
    cell: CellStats
    saving: float | None  # µs per insert saved by this step (None for the start)
    ratio: float  # the start's µs per insert over this rung's
    distinct: bool  # this rung's interval does not overlap the previous one's
    knob: str = ""  # the knob this step adds (the in-stack ladder)
    rests_on: str = ""  # what shows the saving beyond the noise: "CPU time" or "instructions"

    @property
    def us(self) -> float:
        return self.cell.us_per_insert or 0.0

    @property
    def cores(self) -> float | None:
        return cores_needed(self.us)


@dataclass(frozen=True)
class Tried:
    """A knob measured alone from the original app and not taken: its cell, how far it moved, and why not."""

    knob: str
    cell: CellStats
    delta: float  # µs per insert, the cell's over the start's
    why: str


@dataclass(frozen=True)
class Ladder:
    inserts_per_request: int
    rungs: tuple[Rung, ...]
    not_taken: tuple[str, ...]  # changes that would have cost more where they were tried
    note: str = ""
    alone: tuple[Tried, ...] = ()  # the in-stack ladder: knobs measured alone from the start and not taken


def _usable(cells: Iterable[CellStats]) -> dict[CellKey, CellStats]:
    return {c.key: c for c in cells if c.ok and c.verified and c.us_per_insert}


def _overlap(a: CellStats, b: CellStats) -> bool:
    if a.ci is None or b.ci is None:
        return True
    return a.ci[0] <= b.ci[1] and b.ci[0] <= a.ci[1]


def carry(knob: str, framework: str, db: str, shape: str) -> str:
    """The knobs of ``knob`` that still apply to ``framework`` on ``db`` (the original app's source edits become
    our apps' variables, the collector's wrapper stays): what a step keeps of the steps before it."""
    return knob_join(n for n in knob_names(knob) if n in KNOBS
                     and KNOBS[n].applies_to(framework, db, shape, patched=framework == "seed"))


def _db_moves(key: CellKey, by_key: dict[CellKey, CellStats] | None) -> list[tuple[str, str, CellKey]]:
    """One step down the chain (AsyncSession → Core → the raw driver → coalescing), at equal statements where the
    layers allow it: Core in autocommit against the raw driver as it is, Core's BEGIN/COMMIT against the raw
    driver in a transaction; the transaction's removal is a step of its own (``autocommit``). ``by_key`` None
    plans (every target, measured or not); otherwise a run without the equal-statement cells (older runs) steps to
    the layer as it is, and a layer not measured is skipped."""
    if key.db not in CHAIN:
        return []
    framework = "fastapi" if key.framework == "seed" else key.framework
    names = set(knob_names(key.knob))
    seed = " (FastAPI kept; the handler's AsyncSession goes)" if key.framework == "seed" else ""
    moves: list[tuple[str, str, CellKey]] = []

    def to(db: str, knob_set: set[str]) -> CellKey:
        return key.but(framework=framework, db=db, knob=carry(knob_join(knob_set), framework, db, key.shape))

    if key.db == "orm":
        moves.append(("db", CHAIN_TEXT["core"] + seed, to("core", names)))
    elif key.db == "core":
        raw, rest = ("psycopg", names - {"psycopg"}) if "psycopg" in names else ("asyncpg", names)
        raw_name = "raw psycopg" if raw == "psycopg" else "raw asyncpg"
        if "autocommit" in rest:
            moves.append(("db", f"SQLAlchemy Core → {raw_name} (one statement each: autocommit)",
                          to(raw, rest - {"autocommit"})))
        elif key.shape in ("one", "get"):
            moves.append(("db", f"SQLAlchemy Core → {raw_name} (BEGIN, INSERT, COMMIT each)",
                          to(raw, rest | {"transaction"})))
        else:
            moves.append(("db", f"SQLAlchemy Core → {raw_name}", to(raw, rest)))
    elif key.db in ("asyncpg", "psycopg") and "transaction" in names:
        moves.append(("autocommit", "a transaction around one INSERT → autocommit (1 statement instead of 3)",
                      key.but(knob=knob_join(names - {"transaction"}))))
    if key.db in ("asyncpg", "psycopg") and "transaction" not in names:
        moves.append(("db", CHAIN_TEXT["coalesced"] if key.db == "asyncpg" else
                      "raw psycopg → coalescing (raw asyncpg, one statement per event-loop turn)",
                      to("coalesced", names)))
    if by_key is None:
        return moves
    found = []
    for kind, text, target in moves:
        if target in by_key:
            found.append((kind, text, target))
        elif kind == "db":  # an older run: the layers as they are, a layer not measured skipped
            later = [key.but(framework=framework, db=db) for db in CHAIN[CHAIN.index(key.db) + 1:]]
            nxt = next((k for k in later if k in by_key), None) if not key.knob else None
            if nxt is not None:
                text = (CHAIN_TEXT[nxt.db] if CHAIN.index(nxt.db) == CHAIN.index(key.db) + 1
                        else f"{CHAIN_NAMES[key.db]} → {CHAIN_NAMES[nxt.db]}")
                found.append(("db", text + seed, nxt))
    return found


def _moves(key: CellKey, by_key: dict[CellKey, CellStats] | None, taken: set[str],
           servers: Iterable[str] = ()) -> list[tuple[str, str, CellKey]]:
    """(kind, text, target) for every change measured from ``key``, the knobs before it kept where they apply;
    with ``by_key`` None, every change the planner should measure (the other servers named by ``servers``, the
    bare ASGI app as the other framework)."""
    moves = _db_moves(key, by_key)
    if key.shape == "each":
        moves.append(("shape", f"{key.inserts_per_request} INSERTs one by one → one statement",
                      key.but(shape="bulk", knob=carry(key.knob, key.framework, key.db, "bulk"))))
    if "framework" not in taken and key.framework != "seed":
        def other(k: CellKey) -> bool:
            return (k.framework not in (key.framework, "seed")
                    and k == key.but(framework=k.framework, knob=carry(key.knob, k.framework, key.db, key.shape)))
        bare = key.but(framework="asgi", knob=carry(key.knob, "asgi", key.db, key.shape))
        others = [k for k in by_key if other(k)] if by_key is not None else [bare] if key.framework != "asgi" else []
        if others:
            best = min(others, key=lambda k: by_key[k].us_per_insert) if by_key is not None else others[0]
            moves.append(("framework", f"{FRAMEWORK_NAMES.get(key.framework, key.framework)} → "
                                       f"{FRAMEWORK_NAMES.get(best.framework, best.framework)}", best))
    if "server" not in taken:
        if by_key is not None:
            moves += [("server", f"{key.server} → {k.server}", k) for k in by_key
                      if k == key.but(server=k.server) and k.server != key.server]
        else:
            moves += [("server", f"{key.server} → {s}", key.but(server=s)) for s in servers if s != key.server]
    twin = key.but(framework=INTERFACE_TWINS.get(key.framework, ""), server=f"{key.server}-rsgi")
    if "interface" not in taken and twin.framework and twin.server in SERVERS and (by_key is None or twin in by_key):
        moves.append(("interface", f"ASGI → {key.server}'s own interface, RSGI (the bare app's twin)", twin))
    return moves if by_key is None else [m for m in moves if m[2] in by_key]


def _climb(by_key: dict[CellKey, CellStats], start: CellKey) -> tuple[list[tuple[str, str, CellKey, float]],
                                                                      list[str], set[str]]:
    """The greedy path from ``start``: (kind, text, target, saving) per step, what was not taken, the kinds taken."""
    taken: set[str] = set()
    path, not_taken, here = [], [], start
    while True:
        savings = [(by_key[here].us_per_insert - by_key[target].us_per_insert, kind, text, target)
                   for kind, text, target in _moves(here, by_key, taken)]
        good = [s for s in savings if s[0] > 0]
        if not good:  # a step down the chain that costs within the noise is taken too, so the rest can be reached
            good = [s for s in savings if s[1] in ("db", "autocommit", "framework") and _overlap(by_key[here],
                                                                                                 by_key[s[3]])]
        if not good:
            not_taken += [f"{text} (+{-saving:,.1f} µs per insert at `{here.label}`)"
                          for saving, kind, text, _ in savings if kind in ("framework", "server", "interface")]
            return path, not_taken, taken
        # a step the figures show beyond the noise first: one within it is taken only when no other saves, so it
        # cannot change the order of those that are real
        shown = [s for s in good if beyond_noise(by_key[here], by_key[s[3]])]
        saving, kind, text, target = max(shown or good, key=lambda s: s[0])
        taken.add(kind)
        path.append((kind, text, target, saving))
        here = target


def ladder(cells: list[CellStats], start: CellKey, original: CellKey | None = None) -> Ladder | None:
    """From ``start``, the biggest measured saving beyond the noise first (a saving within the noise only when
    there is no other), until no measured change saves anything; ratios against
    ``original`` (default: the start), the original app as published where the start carries knobs."""
    by_key = _usable(cells)
    if start not in by_key:
        return None
    base = by_key[original] if original in by_key else by_key[start]
    first = ("the original app, as published" if start.framework == "seed" and not start.knob
             else "the original app with the knobs above" if start.framework == "seed" else "start")
    rungs = [Rung(first, by_key[start], None, base.us_per_insert / by_key[start].us_per_insert, True)]
    path, not_taken, _ = _climb(by_key, start)
    here = start
    for _kind, text, target, saving in path:
        rungs.append(Rung(text, by_key[target], saving, base.us_per_insert / by_key[target].us_per_insert,
                          bool(beyond_noise(by_key[here], by_key[target])),
                          rests_on=beyond_noise(by_key[here], by_key[target])))
        here = target
    note = ""
    pythons = [k for k in by_key if k.python and k == here.but(python=k.python)]
    if pythons:
        best = min(pythons, key=lambda k: by_key[k].us_per_insert)
        saving = by_key[here].us_per_insert - by_key[best].us_per_insert
        if saving > 0:
            rungs.append(Rung(f"Python {_python_name(here.python)} → {best.python}", by_key[best], saving,
                              base.us_per_insert / by_key[best].us_per_insert,
                              not _overlap(by_key[here], by_key[best])))
        else:
            not_taken.append(f"another Python: the best, {best.python}, costs +{-saving:,.1f} µs per insert")
    elif any(k.python for k in by_key) and start.inserts_per_request == 1:
        note = ("The interpreters were measured at other cells than this ladder's last (see "
                "\"Interpreters\"): the interpreter step is left out rather than assumed.")
    return Ladder(start.inserts_per_request, tuple(rungs), tuple(not_taken), note)


def beyond_wanted(cells: list[CellStats], start: CellKey, servers: Iterable[str]) -> list[CellKey]:
    """The cells the beyond-the-stack ladder needs measured next: every change from where its path stands."""
    by_key = _usable(cells)
    if start not in by_key:
        return []
    path, _, taken = _climb(by_key, start)
    here = path[-1][2] if path else start
    return [target for _, _, target in _moves(here, None, taken, servers) if target not in by_key]


def _python_name(label: str) -> str:
    return label or "(this run's)"


def ladders(cells: list[CellStats]) -> list[Ladder]:
    """One ladder beyond the stack per number of inserts per request the original app was measured with (the run's
    own Python), from where its in-stack ladder ends."""
    found = [ladder(cells, beyond_start(cells, start), start) for start in seed_starts(cells)]
    return [lad for lad in found if lad is not None]


def beyond_start(cells: list[CellStats], start: CellKey) -> CellKey:
    """Where the in-stack ladder from ``start`` ends (``start`` itself where it took no step)."""
    by_key = _usable(cells)
    if start not in by_key:
        return start
    path, _ = _in_stack_path(by_key, start)
    return path[-1][1] if path else start


def seed_starts(cells: Iterable[CellStats | CellKey]) -> list[CellKey]:
    """The original app as published under uvicorn, one insert per request and N one by one, fewest first."""
    keys = [c.key if isinstance(c, CellStats) else c for c in cells]
    starts = [k for k in keys if k.framework == "seed" and k.server == "uvicorn" and not k.python and not k.knob
              and k.shape in ("one", "each")]
    return sorted(dict.fromkeys(starts), key=lambda k: k.inserts_per_request)


NOISE_INSTRUCTIONS = 0.03  # instruction counts repeat within 0.7%: a change beyond 3% is not their noise
# The smallest saving a step counts, as a share of the CPU per insert of the cell it leaves. Side by side in one
# run, 3 samples a cell, two cells' intervals can part on a difference that the next run does not repeat: in two
# default runs of the same code from fresh clones here (2026-12-02), the same one-change pair's saving differed
# between the runs by a median 1.0% of its cell, 2.9% at the 90th percentile and up to 8.6%, and the original
# app's autocommit saved 4.0% in one and 0.2% in the other. Below 5% a step is within the noise between runs.
MIN_STEP = 0.05


REMOVED_LEAST, REMOVED_GONE = 0.05, 0.01  # a package a step removes: this share of the cell before, under this after


def removed_under(before: CellStats, after: CellStats) -> list[tuple[str, float]]:
    """The packages a step removes, with the µs per insert that ran under them (their frames and everything they
    call) in ``before``, largest first: those holding at least ``REMOVED_LEAST`` of ``before``'s CPU and less than
    ``REMOVED_GONE`` of ``after``'s. Empty unless both cells were profiled with inclusive shares."""
    was, now = cell_inclusive(before), cell_inclusive(after)
    if not was or now is None or not before.us_per_insert:
        return []
    return [(package, share * before.us_per_insert) for package, share in was.items()
            if share >= REMOVED_LEAST and now.get(package, 0.0) < REMOVED_GONE]


def beyond_noise(here: CellStats, there: CellStats) -> str:
    """What shows ``there`` saving CPU over ``here`` beyond the noise: "CPU time" (the 95% intervals do not
    overlap), else "instructions" (both counted, fewer by more than ``NOISE_INSTRUCTIONS``, and the CPU time
    lower too), else "" (within the noise, or a cost). CPU time comes first: it is what the question asks, and
    it sees what instructions do not (the kernel's work, a collector that runs under load). Either way the median
    CPU time must fall by ``MIN_STEP`` at least: less does not repeat from one run to the next."""
    if not (here.us_per_insert and there.us_per_insert) or there.us_per_insert >= here.us_per_insert:
        return ""
    if (here.us_per_insert - there.us_per_insert) / here.us_per_insert < MIN_STEP:
        return ""
    if not _overlap(here, there):
        return "CPU time"
    a, b = here.instructions_per_insert, there.instructions_per_insert
    return "instructions" if a and b and (a - b) / a > NOISE_INSTRUCTIONS else ""


def in_stack_moves(key: CellKey) -> list[tuple[str, CellKey]]:
    """(knob, target) for every in-stack knob that can join ``key``'s knobs (the original app, edited)."""
    return [(name, key.but(knob=knob_join([*knob_names(key.knob), name]))) for name, knob in KNOBS.items()
            if knob.in_stack and knob_fits(key.knob, name)
            and knob.applies_to(key.framework, key.db, key.shape, patched=True)]


def _in_stack_path(by_key: dict[CellKey, CellStats], start: CellKey) -> tuple[list[tuple[str, CellKey, float, str]],
                                                                              set[str]]:
    """The knobs taken from ``start``, each the largest saving beyond the noise from where the last left off,
    and the knobs that saved beyond the noise alone (only those are tried in combination)."""
    base = by_key[start]
    helpful = {n for n, t in in_stack_moves(start) if t in by_key and beyond_noise(base, by_key[t])}
    path, here = [], start
    while True:
        scored = [(by_key[here].us_per_insert - by_key[t].us_per_insert, n, t, beyond_noise(by_key[here], by_key[t]))
                  for n, t in in_stack_moves(here) if t in by_key and (here == start or n in helpful)]
        good = [s for s in scored if s[3]]
        if not good:
            return path, helpful
        saving, name, target, rests = max(good, key=lambda s: s[0])
        path.append((name, target, saving, rests))
        here = target


def in_stack(cells: list[CellStats], start: CellKey) -> Ladder | None:
    """From the original app as published, the knobs a FastAPI + SQLAlchemy user can turn without leaving it:
    each step adds one, cumulative, every combination measured; a knob that saves nothing beyond the noise
    alone is listed, not tried further."""
    by_key = _usable(cells)
    if start not in by_key:
        return None
    base = by_key[start]
    path, helpful = _in_stack_path(by_key, start)
    rungs = [Rung("the original app, as published", base, None, 1.0, True)]
    here = start
    for name, target, saving, rests in path:
        rungs.append(Rung(KNOBS[name].change, by_key[target], saving, base.us_per_insert / by_key[target].us_per_insert,
                          not _overlap(by_key[here], by_key[target]), knob=name, rests_on=rests))
        here = target
    taken = {name for name, *_ in path}
    alone = []
    for name, target in in_stack_moves(start):
        if name in taken or target not in by_key:
            continue
        delta = by_key[target].us_per_insert - base.us_per_insert
        why = ("it saved alone, nothing beyond the noise once the steps above were taken" if name in helpful
               else "within noise" if delta <= 0 else "it costs more")
        alone.append(Tried(name, by_key[target], delta, why))
    not_taken = [f"{KNOBS[t.knob].change} (`{t.knob}`: {t.delta:+,.1f} µs per insert alone; {t.why})" for t in alone]
    return Ladder(start.inserts_per_request, tuple(rungs), tuple(not_taken), alone=tuple(alone))


def in_stack_ladders(cells: list[CellStats]) -> list[Ladder]:
    """The in-stack ladder for each start of the original app (one insert per request, then N one by one)."""
    found = [in_stack(cells, start) for start in seed_starts(cells)]
    return [lad for lad in found if lad is not None]


def in_stack_wanted(cells: list[CellStats], start: CellKey) -> list[CellKey]:
    """The cells the in-stack ladder needs measured next, given what is measured so far: every knob alone from
    the start, then each knob that saved alone added to where the path stands (the planner adds these)."""
    by_key = _usable(cells)
    wanted = [t for _, t in in_stack_moves(start)]
    if start in by_key:
        path, helpful = _in_stack_path(by_key, start)
        here = path[-1][1] if path else start
        if path:
            wanted += [t for n, t in in_stack_moves(here) if n in helpful]
    return list(dict.fromkeys(wanted))


def mirrored(cells: list[CellStats], one: CellKey, many: CellKey) -> list[CellKey]:
    """The one-insert ladders' cells at ``many``'s inserts per request, one by one (and the last in one statement
    too), with the same knobs where they apply: the candidates the N-insert ladders choose among (the planner
    adds these, rather than searching again). The in-stack rungs keep their knobs; the rungs beyond the stack
    trade the knobs the one-insert in-stack ladder took for those the N-insert one took, since that is where the
    N-insert ladder beyond the stack starts."""
    inside, beyond = in_stack(cells, one), ladder(cells, beyond_start(cells, one), one)
    took = set(knob_names(beyond_start(cells, one).knob))
    takes = set(knob_names(beyond_start(cells, many).knob))
    keys = [(r.cell.key, r.cell.key.knob) for r in (inside.rungs if inside else ())]
    keys += [(r.cell.key, knob_join((set(knob_names(r.cell.key.knob)) - took) | takes))
             for r in (beyond.rungs if beyond else ())]
    keys = [(k, knob) for k, knob in keys if not k.python]
    wanted = [k.but(inserts_per_request=many.inserts_per_request, shape=shape,
                    knob=carry(knob, k.framework, k.db, shape))
              for i, (k, knob) in enumerate(keys) for shape in ("each", "bulk")
              if shape == "each" or i == len(keys) - 1]
    return [k for k in dict.fromkeys(wanted) if k != many]
