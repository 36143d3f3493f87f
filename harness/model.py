"""The one data model: a run (``Run``), its cells (``Cell``) and samples (``Sample``), and ``run.json``.

run.json holds the options, the environment, the planned cells in order and every sample measured so
far, rewritten atomically after every sample; an interrupted run is finished with ``--resume RUN_ID`` from
this file alone, and reports are rendered from it alone. ``Sample`` is the one record of a measured window:
the sampler fills it, the progress line, the analysis and the report read it, and it writes and reads itself
here. The measuring wing builds a ``Run`` and hands it, in memory, to the analysis and the report; ``nox -s
report`` reads the same ``Run`` back from disk.

Format history (``schema``):
  1  the first format: samples of CPU windows only, as plain dicts.
  2  every sample has a ``kind`` ("cpu", "instructions" or "profile"), a ``machine`` record (steal and
     iowait ticks over the window, load average), ``instructions`` and ``gc_instructions`` (callgrind
     windows) and ``extra`` (what a profile window found); options gain ``precision``, ``budget``,
     ``instructions``, ``instruction_requests``, ``instruction_concurrency`` and ``profile``. Schema 1
     files read as schema 2 with ``kind="cpu"`` and the new fields empty.
  3  a cell has a ``shape`` ("one" for one insert per request; "bulk" or "each" for several: one statement
     or one per row; "get" for the bare app's body-less form) and a ``python`` (the interpreter's label,
     e.g. "3.12.8"); options gain ``shapes``, ``pythons`` (label → path and build) and ``question``.
     Older files read with ``shape`` "one" (N = 1) or "bulk" (N > 1), ``python`` "" (the run's own).
  4  a cell has a ``knob``: "" for none, else the name of an ``axes.KNOBS`` entry (a change a user can copy,
     measured beside the cell without it); options gain ``knobs``. Older files read with ``knob`` "". Samples
     gain ``server_rss_warm_mib`` and ``server_rss_end_mib`` (the server tree's resident memory after the
     warm-up and at the window's end); samples without them (all older files, and the first schema 4 run) read
     as None.
     Samples gain ``statements_by_kind``: the window's statements by kind from pg_stat_statements ("begin",
     "commit", "rollback", "insert:<table>", "reset", "ping", "other"; ``analysis.statements``), summing to
     ``statements``; samples without it (older files) read as None.
  5  samples may be of kind "soak": one of the consecutive windows of a soak (``--soak``), one server serving the
     cell throughout, ``repeat`` the window's number and ``extra["soak_elapsed_s"]`` the seconds from the server's
     start to the window's end; a soaked cell need not be a planned one (``every_cell`` leaves it out of the
     matrix). Options gain ``soak_minutes``, ``soak_window``, ``soak_windows`` and ``soak_cells`` (None or absent:
     no soak). Older files read unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from harness.axes import SOAK

SCHEMA = 5
READABLE = (1, 2, 3, 4, 5)
DEFAULT_PRECISION = 0.05  # ±5%: a cell whose 95% interval is wider gets more samples, and is marked


@dataclass(frozen=True)
class Cell:
    """framework × server × database layer × inserts per request × shape × interpreter × knob.

    ``shape`` is how a request's rows are written: "one" (one insert), "bulk" (N rows in one statement),
    "each" (N statements in one transaction) or "get" (the bare app's GET form: no body to read).
    ``python`` labels the interpreter the server ran on; "" is the run's own (schema 1 and 2 files).
    ``knob`` names the change applied to it (``axes.KNOBS``); "" is the cell as written.
    """

    framework: str
    server: str
    db: str
    inserts_per_request: int = 1
    shape: str = "one"
    python: str = ""
    knob: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> Cell:
        n = int(data.get("inserts_per_request") or 1)
        return cls(framework=str(data["framework"]), server=str(data["server"]), db=str(data["db"]),
                   inserts_per_request=n, shape=str(data.get("shape") or ("one" if n == 1 else "bulk")),
                   python=str(data.get("python") or ""), knob=str(data.get("knob") or ""))

    @property
    def label(self) -> str:
        """framework/server/db, with ×N and the shape for N inserts per request, GET, @python, +knob."""
        many = f" ×{self.inserts_per_request} {self.shape}" if self.inserts_per_request != 1 else ""
        get = " GET" if self.shape == "get" else ""
        python = f" @{self.python}" if self.python else ""
        knob = f" +{self.knob}" if self.knob else ""
        return f"{self.framework}/{self.server}/{self.db}{many}{get}{python}{knob}"

    def but(self, **changes: Any) -> Cell:
        """This cell with some coordinates changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Sample:
    """One measured window of one cell: what the sampler saw, nothing derived.

    A failed sample keeps its reason and leaves the figures None. ``kind`` says which window it was: a
    CPU-time sample (the matrix), a callgrind window (``instructions`` counted) or a profiled window.
    """

    cell: Cell
    repeat: int
    kind: str = "cpu"
    started_at: str | None = None
    status: str = "ok"
    reason: str | None = None
    verified: bool = False
    verify_errors: tuple[str, ...] = ()
    window_s: float | None = None
    requests: int | None = None
    requests_ok: int | None = None
    errors: int | None = None
    status_counts: dict[str, int] | None = None
    inserts: int | None = None
    server_cpu_user_s: float | None = None
    server_cpu_system_s: float | None = None
    pg_cpu_s: float | None = None
    loadgen_cpu_s: float | None = None
    statements: int | None = None
    transactions: int | None = None
    latency_ms: dict[str, float] | None = None
    handler_cpu_ms_mean: float | None = None
    handler_wall_ms_mean: float | None = None
    instructions: int | None = None  # callgrind's Ir over the server tree, instrumented window only
    gc_instructions: int | None = None  # of those, the cyclic garbage collector's (None: not measurable)
    machine: dict[str, float] | None = None  # steal_ticks, iowait_ticks, ticks, loadavg_1m
    extra: dict[str, Any] | None = None  # what one kind records beyond the common fields (profile shares…)
    server_rss_warm_mib: float | None = None  # the server tree's resident memory after the warm-up
    server_rss_end_mib: float | None = None  # and at the measured window's end
    statements_by_kind: dict[str, int] | None = None  # the window's statements by kind, summing to ``statements``

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def key(self) -> tuple:
        return (self.cell, self.kind, self.repeat)

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _FIELDS if name != "cell"}
        data["verify_errors"] = list(self.verify_errors)
        return {**asdict(self.cell), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        known = {name: data[name] for name in _FIELDS if name in data and name != "cell"}
        known["verify_errors"] = tuple(str(e) for e in data.get("verify_errors") or ())
        known["verified"] = data.get("verified") is True
        known["repeat"] = int(data.get("repeat") or 0)
        known["kind"] = data.get("kind") or "cpu"
        return cls(cell=Cell.from_dict(data), **known)

    def failed(self, reason: str) -> Sample:
        return Sample(cell=self.cell, repeat=self.repeat, kind=self.kind, started_at=self.started_at,
                      status="failed", reason=reason, machine=self.machine)


_FIELDS = tuple(f.name for f in fields(Sample))


@dataclass
class Run:
    """A whole run: where it ran, how, the planned cells in order and every sample so far."""

    run_id: str
    directory: Path
    options: dict
    cells: list[Cell]
    environment: dict = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.directory / "run.json"

    @property
    def every_cell(self) -> list[Cell]:
        """The planned cells in order, then any cell sampled but not planned (a soak's windows aside: a cell only
        soaked is no cell of the matrix)."""
        return list(dict.fromkeys([*self.cells, *(s.cell for s in self.samples if s.kind != SOAK)]))

    @property
    def precision(self) -> float:
        """The run's target: a cell's interval half-width over its median (a fraction)."""
        value = self.options.get("precision")
        return DEFAULT_PRECISION if value is None else float(value) / 100

    def done(self) -> set[tuple]:
        return {s.key for s in self.samples}

    def of(self, cell: Cell, kind: str = "cpu") -> list[Sample]:
        return [s for s in self.samples if s.cell == cell and s.kind == kind]

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        self.save()

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {"schema": SCHEMA, "run_id": self.run_id, "environment": self.environment,
                "options": self.options, "cells": [asdict(c) for c in self.cells],
                "samples": [s.to_dict() for s in self.samples]}
        write_atomically(self.path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def from_dict(cls, data: dict, directory: Path = Path(".")) -> Run:
        check_schema(data, directory / "run.json")
        return cls(run_id=str(data.get("run_id", "")), directory=directory, options=data.get("options") or {},
                   cells=[Cell.from_dict(c) for c in data.get("cells") or ()],
                   environment=data.get("environment") or {},
                   samples=[Sample.from_dict(s) for s in data.get("samples") or ()])

    @classmethod
    def load(cls, path: Path) -> Run:
        """Read a run from its directory, or from its run.json (a file of any name)."""
        path = Path(path)
        file = path if path.is_file() else path / "run.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file} does not exist: pass a results/<run-id> directory or its run.json.")
        return cls.from_dict(json.loads(file.read_text(encoding="utf-8")), file.parent)


def check_schema(data: dict, where: Path | str) -> None:
    if data.get("schema") not in READABLE:
        raise ValueError(f"{where} has schema {data.get('schema')!r}; this harness reads schemas "
                         f"{', '.join(map(str, READABLE))}. Render it with the insertbench version that wrote it.")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a crash leaves the old file or the new."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def new_run_id(commit: str | None) -> str:
    """UTC time, the commit and a short random tag, so two runs started in the same second differ."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    tag = secrets.token_hex(3)
    return f"{stamp}-{commit[:7]}-{tag}" if commit else f"{stamp}-{tag}"


RESUME_CHECKS = (  # what must not change between a run and its resumption: (what, path into the environment)
    ("commit", ("git_commit",)),
    ("interpreter", ("python_build", "executable")),
    ("Python version", ("python",)),
    ("interpreter build", ("python_build", "configure")),
    ("package versions", ("packages",)),
    ("PostgreSQL version", ("postgres", "version")),
    ("database", ("postgres", "embedded")),
    ("database", ("postgres", "dsn")),
)


def _at(env: dict, path: tuple[str, ...]) -> Any:
    for part in path:
        env = env.get(part) if isinstance(env, dict) else None
    return env


def resume_mismatches(recorded: dict, current: dict) -> list[str]:
    """What differs between the environment a run recorded and this one; empty when it may be resumed."""
    changed = []
    for what, path in RESUME_CHECKS:
        before, now = _at(recorded, path), _at(current, path)
        if before is None or before == now:
            continue
        both_embedded = _at(recorded, ("postgres", "embedded")) and _at(current, ("postgres", "embedded"))
        if path == ("postgres", "dsn") and both_embedded:
            continue  # each embedded cluster gets a port of its own: the same kind of database
        if isinstance(before, dict) and isinstance(now, dict):
            names = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
            changed.append(f"{what} ({', '.join(f'{k} {before.get(k)} → {now.get(k)}' for k in names[:3])})")
        elif what == "commit":
            changed.append(f"commit ({str(before)[:7]} → {str(now)[:7]})")
        else:
            changed.append(f"{what} ({before} → {now})")
    return list(dict.fromkeys(changed))
