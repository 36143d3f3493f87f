"""PostgreSQL for a run: a throwaway embedded cluster, or an existing server named by a DSN.

The benchmark measures CPU, not disk, so the embedded cluster runs with ``fsync``, ``synchronous_commit``
and ``full_page_writes`` off unless ``durable=True``; every run records the settings it used. It listens
on 127.0.0.1 over TCP (the original service talked to its database over TCP), preloads
``pg_stat_statements`` where the binaries ship it (BEGIN and COMMIT tracked too), and runs as an
unprivileged user when we are root, because PostgreSQL refuses to run as root. Its directory stays ours:
that user owns only the data and socket directories inside it, so nothing we write (the password file,
the server log, the DSN file) can be replaced by a symlink of theirs.

Against a server named by a DSN, only ``simple_text`` is written, and only a ``simple_text`` the harness
created (it is marked so); a table of that name that is someone else's is refused. A DSN's password is
never printed or stored: ``redact`` and ``scrub`` remove it, and only settings that bear on performance
are recorded (others, such as ``primary_conninfo``, may hold credentials).

The cluster is a context manager: whatever happens in the body (an exception, Ctrl-C, SIGTERM turned
into SystemExit by the CLI), the postmaster is stopped and its directory removed. As a last resort the
postmaster gets SIGTERM from the kernel if the harness itself dies (PR_SET_PDEATHSIG); one that died is cleaned up
after (``postmaster``), and ``Database.lost`` says when it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import asyncpg

from harness.measure.postmaster import has_pg_stat_statements, mapped_shared_memory, server_options, stop
from harness.measure.process import (
    create_private,
    describe_exit,
    free_port,
    owned_tempdir,
    preexec,
    remove_stale,
    write_private,
)

TABLE_DDL = "CREATE TABLE simple_text (id bigserial PRIMARY KEY, text varchar(1000) NOT NULL)"
MARK = "insertbench"  # the comment on the simple_text the harness created: only that one is written to
DATABASE = "insertbench"
USER = "insertbench"
PROBE_TIMEOUT = 10.0  # seconds a connection check may take before the database counts as gone
NO_POSTGRES = (
    "no PostgreSQL server binaries found (looked at: {looked}). Ways out: install PostgreSQL "
    "(apt-get install postgresql, brew install postgresql@16, or `pip install pgserver`), "
    "point BENCH_PG_BINDIR at a directory holding initdb and postgres, set BENCH_DSN=postgresql://... "
    "(or pass --dsn) to use a server you already run, or use the containers in docker/."
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


_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&]*")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_PASSWORDS: set[str] = set()  # every password of a DSN this process has handled, for ``scrub``


def redact(dsn: str) -> str:
    """The DSN with its password (in the user info or a ``password=`` parameter) replaced by ``***``."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<a DSN that is not a valid URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return urlunsplit(parts._replace(netloc=userinfo + at + hostport, query=_QUERY_PASSWORD.sub(r"\1***", parts.query)))


def passwords(dsn: str) -> set[str]:
    """The passwords a DSN holds, in its user info or a ``password=`` parameter, as written and decoded."""
    try:
        parts = urlsplit(dsn)
        found = [parts.password] + [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
    except ValueError:
        return set()
    return {p for password in found if password for p in (password, unquote(password))}


def _remember_password(dsn: str) -> None:
    _PASSWORDS.update(passwords(dsn))


def scrub(text: str) -> str:
    """``text`` (a server's stderr, an error) with every URL redacted and every known password replaced."""
    text = _URL.sub(lambda match: redact(match.group()), text)
    for password in sorted(_PASSWORDS, key=len, reverse=True):
        text = text.replace(password, "***")
    return text


def normalise(dsn: str) -> str:
    """The DSN with its scheme spelled ``postgresql://`` (apps accept no other case), or a clear error."""
    scheme, sep, rest = dsn.strip().partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        shown = redact(dsn) if sep else "a value that is not a URL"
        raise PostgresError(f"BENCH_DSN (or --dsn) must be a postgresql://user:password@host:port/dbname URL, "
                            f"got {shown}")
    return "postgresql://" + rest


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
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)  # the embedded postmaster

    def __post_init__(self) -> None:
        _remember_password(self.dsn)

    def lost(self, probe: bool = True) -> str | None:
        """Why the database is gone, or None while it is there: the embedded postmaster has ended, or (a server of
        the user's, ``probe``) a connection fails. Without ``probe`` nothing is sent: cheap enough to ask often."""
        if self.process is not None:
            code = self.process.poll()
            return None if code is None else f"PostgreSQL (pid {self.process.pid}) {describe_exit(code)}"
        if not probe:
            return None
        try:
            asyncio.run(asyncio.wait_for(_fetch(self.dsn, "SELECT 1 /* insertbench-harness */"), PROBE_TIMEOUT))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return scrub(f"PostgreSQL at {self.redacted_dsn} stopped answering ({type(exc).__name__}: {exc})")
        return None

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


# What a run records of the server's settings: those that bear on the CPU or the latency of an insert, and
# no others (a server's non-default settings may hold credentials: primary_conninfo, archive_command…).
RECORDED_SETTINGS = (
    "fsync", "synchronous_commit", "full_page_writes", "wal_level", "wal_buffers", "wal_compression",
    "wal_sync_method", "wal_writer_delay", "commit_delay", "commit_siblings", "synchronous_standby_names",
    "checkpoint_timeout", "max_wal_size", "shared_buffers", "work_mem", "huge_pages", "max_connections", "jit",
    "ssl", "password_encryption", "default_transaction_isolation", "track_io_timing", "track_activities",
    "track_counts", "autovacuum", "log_statement", "log_min_duration_statement", "shared_preload_libraries",
    "session_preload_libraries", "pg_stat_statements.track", "pg_stat_statements.track_utility",
)


async def _claim_table(conn: asyncpg.Connection) -> None:
    """Create ``simple_text``, marked as the harness's, or make sure the one the DSN's search_path finds is."""
    async with conn.transaction():
        found = await conn.fetchrow("SELECT to_regclass('simple_text')::text AS name, "
                                    "obj_description(to_regclass('simple_text'), 'pg_class') AS mark")
        if found["name"] is None:
            await conn.execute(TABLE_DDL)
            await conn.execute(f"COMMENT ON TABLE simple_text IS '{MARK}'")
        elif found["mark"] != MARK:
            database = await conn.fetchval("SELECT current_database()")
            raise PostgresError(f"database {database} already has a table {found['name']} that insertbench did "
                                f"not create, and a run fills it with millions of rows; drop it (DROP TABLE "
                                f"{found['name']}) or point BENCH_DSN at another database")


async def _prepare(dsn: str, *, create_extension: bool) -> tuple[str, dict[str, str], bool]:
    """Claim the table (and create pg_stat_statements where it loads); return version, settings, pgss."""
    conn = await asyncpg.connect(dsn)
    try:
        await _claim_table(conn)
        has_pgss = False
        if create_extension:
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.fetchval("SELECT count(*) FROM pg_stat_statements /* insertbench-harness */")
            has_pgss = True
        version = await conn.fetchval("SHOW server_version")
        rows = await conn.fetch("SELECT name, current_setting(name) AS value FROM pg_settings "
                                "WHERE name = ANY($1::text[]) /* insertbench-harness */", list(RECORDED_SETTINGS))
        return version, dict(sorted((r["name"], r["value"]) for r in rows)), has_pgss
    finally:
        await conn.close()


# --- an existing server ------------------------------------------------------------------------------


def existing(dsn: str) -> Database:
    """Use a server the user runs: create ``simple_text`` if missing (refuse one that is not ours), touch no other."""
    _remember_password(dsn)
    dsn = normalise(dsn)
    try:
        version, settings, pgss = asyncio.run(_prepare(dsn, create_extension=False))
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise PostgresError(scrub(f"cannot use {redact(dsn)}: {exc}")) from None
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


def _run_initdb(bindir: Path, datadir: Path, password: str, user: pwd.struct_passwd | None) -> None:
    pwfile = datadir.parent / "pwfile"
    write_private(pwfile, password + "\n", user)
    command = [str(bindir / "initdb"), "-D", str(datadir), "-U", USER, "--pwfile", str(pwfile),
               "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, preexec_fn=preexec(user=user))
    finally:
        pwfile.unlink()
    if result.returncode != 0:
        raise PostgresError(f"initdb failed ({bindir}): {result.stderr.strip()[-800:]}")


def _wait_ready(proc: subprocess.Popen, dsn: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PostgresError(f"postgres {describe_exit(proc.returncode)}: {_tail(log)}")
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
    """A throwaway cluster on 127.0.0.1 with ``simple_text`` created; always stopped and removed.

    Its directory is ours (mode 0711 when PostgreSQL runs as another user): that user owns only ``data/``
    and ``sock/`` inside it; the password file and the log are created here, never through a symlink.
    """
    bindir = bindir or find_bindir()
    user = _unprivileged_user()
    remove_stale()
    root = owned_tempdir("pg")
    proc: subprocess.Popen | None = None
    controls: list[Path] = []
    version = ""
    try:
        datadir, sockdir, log = root / "data", root / "sock", root / "postgres.log"
        for directory in (datadir, sockdir):
            directory.mkdir(mode=0o700)
            if user:
                os.chown(directory, user.pw_uid, user.pw_gid, follow_symlinks=False)
        if user:
            root.chmod(0o711)
        password = secrets.token_urlsafe(18)
        _run_initdb(bindir, datadir, password, user)
        pgss = has_pg_stat_statements(bindir)
        port = free_port()
        log_fd = create_private(log)
        try:
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(datadir),
                 *server_options(port, sockdir, durable=durable, pgss=pgss)],
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=preexec(user=user, cpus=cpus),
            )
        finally:
            os.close(log_fd)
        base = f"postgresql://{USER}:{password}@127.0.0.1:{port}"
        _wait_ready(proc, base + "/postgres", log)
        controls = mapped_shared_memory(proc.pid)  # its dynamic shared memory's control segment
        asyncio.run(_fetch(base + "/postgres", f"CREATE DATABASE {DATABASE}"))
        dsn = f"{base}/{DATABASE}"
        version, settings, has_pgss = asyncio.run(_prepare(dsn, create_extension=pgss))
        yield Database(dsn=dsn, embedded=True, postmaster_pid=proc.pid, datadir=datadir,
                       settings=settings, version=version, pg_stat_statements=has_pgss, process=proc)
    finally:
        try:
            if proc is not None:
                stop(proc, root / "data" / "postmaster.pid", controls, version)
        finally:
            shutil.rmtree(root, ignore_errors=True)
