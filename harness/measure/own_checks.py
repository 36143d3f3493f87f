"""What is checked before the first sample of a user's app (``--app``), each failure one line naming the fix.

In order: the servers (and the event loop and HTTP parser they are run with) import in ``--app-python``;
``--requirements`` installs; the setup SQL runs (PostgreSQL's message if not); the module imports from
``--app-dir`` in the app's own interpreter and environment, and has the attribute; the app, served once,
answers the measured request 2xx (a 404 or a 500 stops the run with the body).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import shlex
import subprocess
import sys
from pathlib import Path

import asyncpg

from harness.axes import SERVERS
from harness.errors import UsageError
from harness.measure.apps import App
from harness.measure.own import OWN_DB, OwnApp
from harness.measure.postgres import scrub
from harness.measure.servers import ServerError

FIX_REQUEST = "fix the request (--request, --body, --header) or the app"
IMPORT_CHECK = """
import importlib, sys
module, attr = sys.argv[1:3]
try:
    loaded = importlib.import_module(module)
except BaseException as exc:
    print("import", type(exc).__name__ + ": " + " ".join(str(exc).split()))
    sys.exit(3)
if not hasattr(loaded, attr):
    print("attr", ", ".join(sorted(n for n, v in vars(loaded).items() if callable(v) and not n.startswith("_"))))
    sys.exit(4)
"""


def install_requirements(path: str) -> None:
    """--requirements: pip-install the app's requirements into the harness's own environment."""
    if not Path(path).is_file():
        raise UsageError(f"--requirements {path}: no such file")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r", path], capture_output=True,
                          text=True)
    if done.returncode:
        last = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:])
        raise UsageError(f"pip could not install --requirements {path}: {last}; fix the file or use --app-python")


def check_servers(own: OwnApp, servers: list[str]) -> None:
    """Every chosen server (and the event loop and parser it is run with) imports in the app's interpreter."""
    if own.python is None:
        return
    wanted = [m for s in servers for m in SERVERS[s].modules]
    probe = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if not importlib.util.find_spec(m)))"
    try:
        done = subprocess.run([own.python, "-c", probe, *dict.fromkeys(wanted)], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"--app-python {own.python} does not run: {exc}") from None
    missing = set(done.stdout.split()) if done.returncode == 0 else set(wanted)
    for server in servers:
        lacking = [m for m in SERVERS[server].modules if m in missing]
        if lacking:
            pins = " ".join(f"{m}=={_version(m)}" if _version(m) else m for m in SERVERS[server].modules)
            others = [s for s in servers if s != server]
            instead = f" (or leave it out: --servers {','.join(others)})" if others else ""
            raise UsageError(f"{server} is not importable in --app-python {own.python} (missing {', '.join(lacking)}):"
                             f" add it with {shlex.quote(own.python)} -m pip install {pins}{instead}")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_import(own: OwnApp, dsn: str) -> None:
    """The module imports from --app-dir, in the app's interpreter and environment, and has the attribute."""
    python = own.python or sys.executable
    try:
        done = subprocess.run([python, "-c", IMPORT_CHECK, own.module, own.attr], cwd=own.app_dir, text=True,
                              env=own.environment(dsn), capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise UsageError(f"importing {own.module} took over 120 s: does it block at import?") from None
    kind, _, detail = scrub(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "").partition(" ")
    if done.returncode == 3 or (done.returncode and kind != "attr"):
        why = detail if kind == "import" else " ".join(scrub(done.stderr).split())[-300:]
        raise UsageError(f"cannot import {own.module} from {own.app_dir} with {python}: {why}; fix --app-dir, or "
                         "give the app's packages (--app-python VENV/bin/python or --requirements FILE)")
    if done.returncode == 4:
        raise UsageError(f"{own.module} has no attribute {own.attr!r} (it has: {detail or 'no callables'}); name "
                         f"the ASGI application with --app {own.module}:NAME")


def run_setup_sql(own: OwnApp, dsn: str) -> None:
    """--setup-sql, once before the first sample; PostgreSQL's message if it fails."""
    if not own.setup_sql.strip():
        return

    async def execute() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(own.setup_sql)
        finally:
            await conn.close()

    try:
        asyncio.run(execute())
    except asyncpg.PostgresError as exc:
        raise UsageError(f"--setup-sql {own.setup_from} failed: {type(exc).__name__}: {exc}; fix the SQL "
                         "(it runs once, on an empty database unless --dsn)") from None


def preflight(own: OwnApp, app: App, server: str, dsn: str, cpus: set[int] | None) -> None:
    """Serve the app once and send the measured request: a 404 or a 500 stops the run here, with its body."""
    from harness.measure.servers import serve

    try:
        with serve(app, server, db=OWN_DB, dsn=dsn, cpus=cpus) as running:
            status, body = own.send(running.port)
    except ServerError as exc:
        raise UsageError(f"{' '.join(str(exc).split())[:600]}; {FIX_REQUEST}") from None
    if not 200 <= status < 300:
        raise UsageError(f"{own.request.label} answered {status} in warm-up: {' '.join(body.split())[:300]}; "
                         f"{FIX_REQUEST}")
