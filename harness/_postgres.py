"""PostgreSQL for a run: a throwaway embedded cluster, or an existing server named by a DSN.

The benchmark measures CPU, not disk, so the embedded cluster runs with ``fsync``, ``synchronous_commit``
and ``full_page_writes`` off unless ``durable=True``; every run records the settings it used. It listens
on 127.0.0.1 over TCP (the original service talked to its database over TCP), preloads
``pg_stat_statements`` where the binaries ship it (BEGIN and COMMIT tracked too), and runs as an
unprivileged user when we are root, because PostgreSQL refuses to run as root.

The cluster is a context manager: whatever happens in the body (an exception, Ctrl-C, SIGTERM turned
into SystemExit by the CLI), the postmaster is stopped and its directory removed. As a last resort the
postmaster gets SIGTERM from the kernel if the harness itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from harness._process import free_port, kill_group, preexec

TABLE_DDL = "CREATE TABLE IF NOT EXISTS simple_text (id bigserial PRIMARY KEY, text varchar(1000) NOT NULL)"
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
DATABASE = "insertbench"
USER = "insertbench"
NO_POSTGRES = (
    "no PostgreSQL server binaries found (looked at: {looked}). Ways out: install PostgreSQL "
    "(apt-get install postgresql, brew install postgresql@16, or `pip install pgserver`), "
    "point BENCH_PG_BINDIR at a directory holding initdb and postgres, pass --dsn URL "
    "to use a server you already run, or use the containers in docker/."
)


class PostgresError(RuntimeError):
    """PostgreSQL could not be found, started or reached; the message says what to do."""


# --- finding the binaries -------------------------------------------------------------------------


def _usable(bindir: Path | str | None) -> Path | None:
    if not bindir:
        return None
    path = Path(bindir)
    ok = all(os.access(path / name, os.X_OK) for name in ("initdb", "postgres"))
    return path if ok else None


def _from_env() -> Path | None:
    """``BENCH_PG_BINDIR``: when set it must be right, or we say so rather than look elsewhere."""
    bindir = os.environ.get("BENCH_PG_BINDIR")
    if bindir and not _usable(bindir):
        raise PostgresError(NO_POSTGRES.format(looked=f"BENCH_PG_BINDIR={bindir}, which holds no initdb and postgres"))
    return _usable(bindir)


def _from_pg_config() -> Path | None:
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
    return _usable(result.stdout.strip()) if result.returncode == 0 else None


def _from_path() -> Path | None:
    initdb = shutil.which("initdb")
    return _usable(Path(initdb).resolve().parent) if initdb else None


def _version_key(path: Path) -> tuple[int, ...]:
    digits = "".join(c if c.isdigit() else " " for c in str(path)).split()
    return tuple(int(d) for d in digits)


def _newest(pattern: str) -> Path | None:
    candidates = sorted(Path("/").glob(pattern.lstrip("/")), key=_version_key, reverse=True)
    return next(filter(None, map(_usable, candidates)), None)


def _from_debian() -> Path | None:
    return _newest("/usr/lib/postgresql/*/bin")


def _from_homebrew() -> Path | None:
    for pattern in ("/opt/homebrew/opt/postgresql*/bin", "/usr/local/opt/postgresql*/bin",
                    "/home/linuxbrew/.linuxbrew/opt/postgresql*/bin"):
        if found := _newest(pattern):
            return found
    return _usable("/opt/homebrew/bin") or _usable("/home/linuxbrew/.linuxbrew/bin")


def _from_pip_package() -> Path | None:
    """The binaries the ``pgserver`` wheel bundles, installing it into this interpreter if we may."""
    with contextlib.suppress(ImportError):
        import pgserver  # type: ignore[import-not-found]

        return _usable(Path(pgserver.__file__).parent / "pginstall" / "bin")
    if os.environ.get("BENCH_PG_NO_INSTALL"):
        return None
    print("insertbench: no PostgreSQL found; installing the pgserver wheel's bundled binaries", file=sys.stderr)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pgserver"], capture_output=True)
    if result.returncode != 0:
        return None
    with contextlib.suppress(ImportError):
        import pgserver  # type: ignore[import-not-found]

        return _usable(Path(pgserver.__file__).parent / "pginstall" / "bin")
    return None


LOOKUPS: tuple[Callable[[], Path | None], ...] = (
    _from_env, _from_pg_config, _from_path, _from_debian, _from_homebrew, _from_pip_package,
)


def find_bindir(lookups: Sequence[Callable[[], Path | None]] = LOOKUPS) -> Path:
    """The first directory holding ``initdb`` and ``postgres``, in the documented order."""
    for lookup in lookups:
        if found := lookup():
            return found
    looked = ", ".join(fn.__name__.removeprefix("_from_") for fn in lookups)
    raise PostgresError(NO_POSTGRES.format(looked=looked))


# --- the database handle ----------------------------------------------------------------------------


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ``***``: safe to print and to store."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Database:
    """A PostgreSQL that holds ``simple_text``: where it is, and what it is."""

    dsn: str
    embedded: bool
    postmaster_pid: int | None = None
    datadir: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    version: str = ""
    pg_stat_statements: bool = False

    @property
    def redacted_dsn(self) -> str:
        return redact(self.dsn)

    def fetch(self, sql: str, *args: object) -> list[tuple]:
        """Run one query on a short-lived connection and return its rows as tuples."""
        return asyncio.run(_fetch(self.dsn, sql, *args))

    def describe(self) -> dict:
        """What a run records about this database (no password)."""
        return {
            "version": self.version,
            "embedded": self.embedded,
            "dsn": self.redacted_dsn,
            "pg_stat_statements": self.pg_stat_statements,
            "settings": dict(self.settings),
        }


async def _fetch(dsn: str, sql: str, *args: object) -> list[tuple]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


RECORDED_SETTINGS = (
    "fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "max_connections", "wal_level",
    "shared_preload_libraries", "pg_stat_statements.track", "pg_stat_statements.track_utility", "jit",
)


async def _prepare(dsn: str, *, create_extension: bool) -> tuple[str, dict[str, str], bool]:
    """Create the table (and pg_stat_statements where it loads); return version, settings, pgss."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TABLE_DDL)
        has_pgss = False
        if create_extension:
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.fetchval("SELECT count(*) FROM pg_stat_statements /* insertbench-harness */")
            has_pgss = True
        version = await conn.fetchval("SHOW server_version")
        rows = await conn.fetch(
            "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1::text[]) "
            "OR source NOT IN ('default', 'override', 'client', 'session') /* insertbench-harness */",
            list(RECORDED_SETTINGS),
        )
        settings = {r["name"]: r["value"] for r in rows if r["name"] not in ("unix_socket_directories", "port")}
        return version, dict(sorted(settings.items())), has_pgss
    finally:
        await conn.close()


# --- an existing server ------------------------------------------------------------------------------


def existing(dsn: str) -> Database:
    """Use a server the user runs: create ``simple_text`` if missing and touch no other table."""
    if urlsplit(dsn).scheme not in ("postgresql", "postgres"):
        raise PostgresError(f"--dsn must be a postgresql:// URL, got {redact(dsn)!r}")
    try:
        version, settings, pgss = asyncio.run(_prepare(dsn, create_extension=False))
    except (OSError, asyncpg.PostgresError) as exc:
        raise PostgresError(f"cannot use {redact(dsn)}: {exc}") from None
    return Database(dsn=dsn, embedded=False, settings=settings, version=version, pg_stat_statements=pgss)


# --- the embedded cluster -----------------------------------------------------------------------------


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Whom to run PostgreSQL as: ourselves unless root, then ``postgres`` or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresError("running as root and no unprivileged user (postgres or nobody) to run PostgreSQL as")


def _has_pg_stat_statements(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    if os.access(pg_config, os.X_OK):
        out = subprocess.run([pg_config, "--pkglibdir"], capture_output=True, text=True).stdout.strip()
        if out and Path(out, "pg_stat_statements.so").exists():
            return True
    return any(Path(bindir.parent, sub, "pg_stat_statements.so").exists() for sub in ("lib", "lib/postgresql"))


def _server_options(port: int, sockdir: Path, *, durable: bool, pgss: bool) -> list[str]:
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(sockdir),
        "max_connections": "300",
        "logging_collector": "off",
        "log_min_messages": "warning",
    }
    if not durable:
        settings |= FAST_SETTINGS
    if pgss:
        settings |= {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track_utility": "on"}
    return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]


def _run_initdb(bindir: Path, datadir: Path, password: str, user: pwd.struct_passwd | None) -> None:
    pwfile = datadir.parent / "pwfile"
    pwfile.write_text(password + "\n")
    if user:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    command = [str(bindir / "initdb"), "-D", str(datadir), "-U", USER, "--pwfile", str(pwfile),
               "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"]
    result = subprocess.run(command, capture_output=True, text=True, preexec_fn=preexec(user=user))
    pwfile.unlink()
    if result.returncode != 0:
        raise PostgresError(f"initdb failed ({bindir}): {result.stderr.strip()[-800:]}")


def _wait_ready(proc: subprocess.Popen, dsn: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PostgresError(f"postgres exited with code {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            asyncio.run(_fetch(dsn.rsplit("/", 1)[0] + "/postgres", "SELECT 1"))
            return
        time.sleep(0.05)
    raise PostgresError(f"postgres did not accept connections within {timeout:.0f}s: {_tail(log)}")


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def embedded(*, durable: bool = False, cpus: set[int] | None = None,
             bindir: Path | None = None) -> Iterator[Database]:
    """A throwaway cluster on 127.0.0.1 with ``simple_text`` created; always stopped and removed."""
    bindir = bindir or find_bindir()
    user = _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix="insertbench-pg-"))
    proc: subprocess.Popen | None = None
    try:
        if user:
            os.chown(root, user.pw_uid, user.pw_gid)
        datadir, log = root / "data", root / "postgres.log"
        password = secrets.token_urlsafe(18)
        _run_initdb(bindir, datadir, password, user)
        pgss = _has_pg_stat_statements(bindir)
        port = free_port()
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(datadir),
                 *_server_options(port, root, durable=durable, pgss=pgss)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=preexec(user=user, cpus=cpus),
            )
        base = f"postgresql://{USER}:{password}@127.0.0.1:{port}"
        _wait_ready(proc, base + "/postgres", log)
        asyncio.run(_fetch(base + "/postgres", f"CREATE DATABASE {DATABASE}"))
        dsn = f"{base}/{DATABASE}"
        version, settings, has_pgss = asyncio.run(_prepare(dsn, create_extension=pgss))
        yield Database(dsn=dsn, embedded=True, postmaster_pid=proc.pid, datadir=datadir,
                       settings=settings, version=version, pg_stat_statements=has_pgss)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT), then the whole process group by force if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    kill_group(proc)
