"""A user's own ASGI app, measured the way the matrix's apps are (``--app MODULE:ATTR``).

The app runs under the chosen servers exactly as a matrix app does (a fresh server per sample, pinned,
health-checked, warmed up, a quiescent window, interleaved repeats, stopped whole), from its own folder
(``--app-dir``: working directory and import root), on its own interpreter (``--app-python``) when given,
with only the environment variables the user names (``--env NAME={dsn}``). The load generator sends the
user's request (``--request``, ``--body``, ``--header``) with every ``{n}`` replaced by a number unique to
each request: microseconds since the epoch at the sample's start plus the request's number, so unique
constraints hold across samples and runs (a 16-digit number: a ``bigint`` or text column takes it).

Its samples are not verified row by row as the matrix's are (the harness knows nothing of its tables):
a sample is good when every request answered 2xx, and the rows it wrote are counted per table (inserted,
updated, deleted) from ``pg_stat_statements``: the rows of each INSERT, UPDATE and DELETE, attributed to the
table the statement names. Not from ``pg_stat_user_tables``: PostgreSQL (15+) publishes a busy backend's
table counters only when it has been idle for up to ten seconds, so a window's rows would land in a later
one.
Its cells are ``Cell(framework=<module>, server, db="app")``; "per insert" figures of such a cell are per
request.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg

from harness import axes
from harness.axes import OWN_DB
from harness.errors import UsageError
from harness.measure.apps import App
from harness.measure.counters import MARK
from harness.measure.load import LoadSpec
from harness.measure.servers import ServerError
from harness.model import Cell

RETRY_STATUSES = (502, 503, 504)  # a health check answered so is tried again; any other non-2xx stops the run
MAX_REQUEST = 65536  # loadgen.c's MAX_TEMPLATE
SET_BY_HARNESS = ("host", "content-length", "transfer-encoding", "connection")


def _text(value: str, what: str) -> str:
    """An option's text, or the contents of the file after ``@``."""
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {value}: cannot read {value[1:]} ({exc.strerror or exc}); give a readable "
                         "UTF-8 file after @, or the text itself") from None


@dataclass(frozen=True)
class Request:
    """The measured request; ``{n}`` anywhere in it becomes a number unique to each request."""

    method: str
    target: str  # path and query string
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""

    @classmethod
    def parse(cls, request: str, body: str | None = None, headers: list[str] | None = None) -> Request:
        parts = request.split()
        if len(parts) != 2 or not parts[0].isalpha() or not parts[1].startswith("/"):
            raise UsageError(f"--request takes a method and a path like \"POST /orders?x=1\", got {request!r}")
        pairs = []
        for header in headers or ():
            name, colon, value = header.partition(":")
            if not colon or not name.strip() or any(c in header for c in "\r\n") or " " in name.strip():
                raise UsageError(f"--header takes \"Name: value\", got {header!r}")
            if name.strip().lower() in SET_BY_HARNESS:
                raise UsageError(f"--header {name.strip()}: the load generator sets it (and keeps connections "
                                 "open); leave it out")
            pairs.append((name.strip(), value.strip()))
        text = _text(body, "--body") if body is not None else ""
        if text and not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
        request = cls(parts[0].upper(), parts[1], tuple(pairs), text)
        if len(request.template()) > MAX_REQUEST:
            raise UsageError(f"the request (--request, --body, --header) is {len(request.template()):,} bytes; the "
                             f"load generator sends at most {MAX_REQUEST:,}: measure with a smaller body")
        return request

    @property
    def label(self) -> str:
        return f"{self.method} {self.target}"

    def render(self, n: int) -> tuple[str, dict[str, str], bytes]:
        """Target, headers and body of the request numbered ``n``."""
        fill = str(n)
        return (self.target.replace("{n}", fill), {k: v.replace("{n}", fill) for k, v in self.headers},
                self.body.replace("{n}", fill).encode())

    def template(self) -> bytes:
        """What loadgen's ``--template`` reads: request line, headers, an empty line, the body; ``{n}`` kept."""
        head = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        return f"{self.method} {self.target} HTTP/1.1\r\n{head}\r\n".encode() + self.body.encode()


def _numbers() -> int:
    """The first ``{n}`` of a sample (or health check): microseconds since the epoch, unique while fewer than a
    million requests a second are sent."""
    return time.time_ns() // 1000


@dataclass(frozen=True)
class OwnApp:
    """``--app MODULE:ATTR`` and how to serve, reach and load it."""

    module: str
    attr: str
    app_dir: Path
    request: Request
    env: tuple[tuple[str, str], ...] = ()  # NAME → value, {dsn} / {dsn_asyncpg} filled in per server
    python: str | None = None  # --app-python; None: the harness's own interpreter
    health: tuple[str, str] | None = None  # --health; None: the measured request itself
    setup_sql: str = ""
    setup_from: str = ""  # where the setup SQL came from, for messages

    @property
    def health_label(self) -> str:
        what = f"{self.health[0]} {self.health[1]}" if self.health else self.request.label
        return f"{what} (the health check) did not answer 2xx"

    def app(self) -> App:
        return App(name=self.module, module=self.module, root=self.app_dir, db_layers=(OWN_DB,),
                   endpoints={"one": (self.request.method, self.request.target)}, attr=self.attr, own=self)

    def cells(self, servers: list[str]) -> list[Cell]:
        return [Cell(self.module, server, OWN_DB) for server in servers if axes.SERVERS[server].interface == "asgi"]

    def describe(self) -> dict[str, Any]:
        """What run.json records: no header values and no environment values (they may hold secrets)."""
        return {"module": self.module, "attr": self.attr, "app_dir": str(self.app_dir),
                "request": self.request.label, "headers": [name for name, _ in self.request.headers],
                "body_bytes": len(self.request.body.encode()), "env": [name for name, _ in self.env],
                "python": self.python, "health": " ".join(self.health) if self.health else None,
                "setup_sql": self.setup_from or None}

    def environment(self, dsn: str) -> dict[str, str]:
        """The server's environment: the harness's own, the app's folder as import root, the variables named."""
        asyncpg_dsn = "postgresql+asyncpg://" + dsn.split("://", 1)[1]
        named = {k: v.replace("{dsn_asyncpg}", asyncpg_dsn).replace("{dsn}", dsn) for k, v in self.env}
        keep = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_") and k != "PYTHONPATH"}
        return keep | {"PYTHONPATH": str(self.app_dir), "PYTHONUNBUFFERED": "1"} | named

    def send(self, port: int, method: str | None = None, target: str | None = None) -> tuple[int, str]:
        """One request to the app (the measured one unless told otherwise): status and body (0: no answer)."""
        path, headers, body = self.request.render(_numbers())
        if method is not None:
            path, headers, body = target or "/", {}, b""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method or self.request.method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(2000).decode(errors="replace")
        except OSError as exc:
            return 0, str(exc)
        finally:
            conn.close()

    def healthy(self, port: int) -> bool:
        """The health check: 2xx is up; no answer, 502, 503 or 504 is not yet; anything else fails at once."""
        status, body = self.send(port, *(self.health or ()))
        if 200 <= status < 300:
            return True
        if status == 0 or status in RETRY_STATUSES:
            return False
        what = " ".join(self.health) if self.health else self.request.label
        raise ServerError(f"{what} answered {status} at startup: {' '.join(body.split())[:300]}")

    def load_spec(self, spec: LoadSpec, workdir: Path) -> LoadSpec:
        """The matrix's load spec for this window, sending this app's request instead."""
        path = Path(workdir) / f"request-{spec.prefix}.http"
        path.write_bytes(self.request.template())
        return replace(spec, method=self.request.method, path="/", body="template", inserts=1, sum_field=None,
                       template=str(path), n_base=_numbers())


def from_args(args: Any) -> OwnApp:
    """The own app the command line describes; a usage error names what to fix."""
    module, colon, attr = str(args.app).partition(":")
    if not colon or not module or not attr.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
        raise UsageError(f"--app takes MODULE:ATTR like myservice.main:app, got {args.app!r}")
    app_dir = Path(args.app_dir or ".").resolve()
    if not app_dir.is_dir():
        raise UsageError(f"--app-dir {args.app_dir}: no such folder; give the folder your app is imported from")
    env = []
    for item in args.env or ():
        name, equals, value = item.partition("=")
        if not equals or not name.isidentifier():
            raise UsageError(f"--env takes NAME=VALUE like DATABASE_URL={{dsn}}, got {item!r}")
        env.append((name, value))
    python = None
    if args.app_python:
        python = str(Path(args.app_python).absolute())
        if not os.access(python, os.X_OK) or not Path(python).is_file():
            raise UsageError(f"--app-python {args.app_python}: not an executable file; give your virtualenv's "
                             "bin/python")
        if args.requirements:
            raise UsageError("--requirements installs into the harness's environment; with --app-python install "
                             f"into yours instead: {python} -m pip install -r {args.requirements}")
    health = None
    if args.health:
        parts = args.health.split()
        if len(parts) != 2 or not parts[1].startswith("/"):
            raise UsageError(f"--health takes a method and a path like \"GET /health\", got {args.health!r}")
        health = (parts[0].upper(), parts[1])
    setup = _text(args.setup_sql, "--setup-sql") if args.setup_sql else ""
    return OwnApp(module=module, attr=attr, app_dir=app_dir,
                  request=Request.parse(args.request or "", args.body, args.header), env=tuple(env), python=python,
                  health=health, setup_sql=setup, setup_from=args.setup_sql or "")


# A statement that writes one table, as pg_stat_statements normalises it: INSERT INTO t, UPDATE t, DELETE FROM t.
NAME = r'(?:"[^"]+"|[\w$]+)'
DML = re.compile(rf"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(?:ONLY\s+)?({NAME}(?:\.{NAME})?)", re.IGNORECASE)
KINDS = {"INSERT": "inserted", "UPDATE": "updated", "DELETE": "deleted"}


def _table_of(query: str) -> tuple[str, str] | None:
    """(table, "inserted" | "updated" | "deleted") of a statement that writes one table; None for any other."""
    found = DML.match(query)
    if not found:
        return None
    name = found.group(2).replace('"', "")
    return name.removeprefix("public."), KINDS[found.group(1).split()[0].upper()]


async def _tables(dsn: str) -> dict[tuple[str, str], int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT query, rows FROM pg_stat_statements WHERE dbid = (SELECT oid FROM "
                                f"pg_database WHERE datname = current_database()) {MARK}")
    finally:
        await conn.close()
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        if MARK not in row["query"] and (key := _table_of(row["query"])):
            counts[key] = counts.get(key, 0) + row["rows"]
    return counts


def table_counts(dsn: str) -> dict[tuple[str, str], int]:
    """Rows written so far by (table, kind), from pg_stat_statements: each INSERT, UPDATE or DELETE statement's
    rows, attributed to the table it names (statements it cannot attribute, such as a CTE's, are left out)."""
    return asyncio.run(_tables(dsn))


def table_delta(before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]) -> dict:
    """What the window wrote, per table with any: {"orders": {"inserted": 10, "updated": 0, "deleted": 0}}."""
    delta: dict[str, dict[str, int]] = {}
    for (table, kind), rows in sorted(after.items()):
        if rows - before.get((table, kind), 0):
            delta.setdefault(table, dict.fromkeys(KINDS.values(), 0))[kind] = rows - before.get((table, kind), 0)
    return delta
