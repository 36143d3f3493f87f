"""The embedded PostgreSQL: it starts, serves, and always leaves nothing behind; --dsn mode is careful."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil
import pytest

from harness.measure.counters import db_snapshot
from harness.measure.postgres import Database, PostgresError, embedded, existing

ROOT = Path(__file__).resolve().parents[2]


def _cluster_processes(datadir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(datadir) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _postmaster_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_embedded_cluster_inserts_and_leaves_nothing_behind() -> None:
    with embedded() as db:
        rows = db.fetch("INSERT INTO simple_text (text) VALUES ($1) RETURNING id, text", "round trip")
        assert rows[0][1] == "round trip"
        assert db.fetch("SELECT text FROM simple_text WHERE id = $1", rows[0][0]) == [("round trip",)]
        assert db.settings["fsync"] == "off" and db.settings["synchronous_commit"] == "off"
        assert db.pg_stat_statements
        datadir, pid = db.datadir, db.postmaster_pid
        assert datadir is not None and pid is not None
        assert _cluster_processes(datadir)
    assert _postmaster_gone(pid)
    assert not _cluster_processes(datadir)
    assert not datadir.parent.exists()


def test_embedded_cluster_is_removed_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), embedded() as db:
        datadir, pid = db.datadir, db.postmaster_pid
        raise RuntimeError("boom")
    assert _postmaster_gone(pid)
    assert not datadir.parent.exists()


def test_durable_option_keeps_postgres_defaults() -> None:
    with embedded(durable=True) as db:
        assert db.settings["fsync"] == "on"
        assert db.settings["synchronous_commit"] == "on"


def _start_cli_postgres() -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "harness", "postgres"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops it" in line:
            return proc, lines
    proc.kill()
    pytest.fail("python -m harness postgres did not come up: " + "".join(lines))


def _dsn_file(lines: list[str]) -> Path:
    line = next(line for line in lines if "export BENCH_DSN" in line)
    return Path(line.split("$(cat ", 1)[1].split(")", 1)[0])


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_cli_postgres_prints_a_redacted_dsn_and_stops_clean(stop_signal: signal.Signals) -> None:
    proc, lines = _start_cli_postgres()
    dsn_file = _dsn_file(lines)
    dsn = dsn_file.read_text().strip()
    password = dsn.split(":")[2].split("@")[0]
    assert "***" in lines[0] and password not in "".join(lines)
    assert Database(dsn=dsn, embedded=True).fetch("SELECT 1") == [(1,)]
    root = dsn_file.parent
    assert _cluster_processes(root)
    proc.send_signal(stop_signal)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode in (0, 130), output
    assert not _cluster_processes(root)
    assert not root.exists()


def test_bindir_without_postgres_from_the_cli_is_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, BENCH_PG_BINDIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "harness", "postgres"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--dsn" in result.stderr and str(tmp_path) in result.stderr


def test_existing_server_gets_the_table_and_nothing_else(database: Database) -> None:
    name = f"dsn_mode_{os.getpid()}"
    database.fetch(f"CREATE DATABASE {name}")
    dsn = database.dsn.rsplit("/", 1)[0] + f"/{name}"
    other = Database(dsn=dsn, embedded=False)
    other.fetch("CREATE TABLE keep_me (id int)")
    other.fetch("INSERT INTO keep_me VALUES (1), (2)")
    db = existing(dsn)
    tables = other.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    assert tables == [("keep_me",), ("simple_text",)]
    assert other.fetch("SELECT count(*) FROM keep_me") == [(2,)]
    assert "***" in db.describe()["dsn"] and dsn.split(":")[2].split("@")[0] not in str(db.describe())
    existing(dsn)  # idempotent: the table is already there


def test_existing_server_unreachable_is_a_clear_error() -> None:
    with pytest.raises(PostgresError, match=r"cannot use postgresql://u:\*\*\*@127.0.0.1:1/db"):
        existing("postgresql://u:pw@127.0.0.1:1/db")


def _scratch_database(database: Database, name: str) -> Database:
    database.fetch(f"DROP DATABASE IF EXISTS {name}")
    database.fetch(f"CREATE DATABASE {name}")
    return Database(dsn=database.dsn.rsplit("/", 1)[0] + f"/{name}", embedded=False)


def test_a_simple_text_table_the_harness_did_not_create_is_refused(database: Database, tmp_path: Path) -> None:
    other = _scratch_database(database, f"users_table_{os.getpid()}")
    other.fetch("CREATE TABLE simple_text (id int, note text)")
    other.fetch("INSERT INTO simple_text VALUES (1, 'mine')")
    with pytest.raises(PostgresError, match=r"did not create.*DROP TABLE simple_text.*another database"):
        existing(other.dsn)
    result = subprocess.run([sys.executable, "-m", "harness", "run", "--results", str(tmp_path), "--quick"],
                            cwd=ROOT, env=dict(os.environ, BENCH_DSN=other.dsn), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "drop it" in result.stderr and "another database" in result.stderr
    assert other.fetch("SELECT * FROM simple_text") == [(1, "mine")]
    assert other.fetch("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(1,)]
    assert not list(tmp_path.iterdir())


def test_the_table_the_harness_created_is_marked_and_reused(database: Database) -> None:
    other = _scratch_database(database, f"marked_table_{os.getpid()}")
    existing(other.dsn)
    assert other.fetch("SELECT obj_description('simple_text'::regclass, 'pg_class')") == [("insertbench",)]
    other.fetch("INSERT INTO simple_text (text) VALUES ('from a run')")
    existing(other.dsn)
    assert other.fetch("SELECT text FROM simple_text") == [("from a run",)]


async def _statements_of_a_window(dsn: str) -> tuple:
    """Around a window on a real asyncpg pool (its default reset on release): three requests as BEGIN, INSERT,
    COMMIT; two INSERTs in autocommit; a SELECT 1; a transaction rolled back. Returns the snapshots' Δ."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)  # connecting is not the window's
    try:
        before = await asyncio.to_thread(db_snapshot, dsn, True)
        for i in range(3):
            async with pool.acquire() as conn, conn.transaction():
                await conn.fetchval("INSERT INTO simple_text (text) VALUES ($1) RETURNING id", f"by kind {i}")
        for i in range(2):
            await pool.fetchval("INSERT INTO simple_text (text) VALUES ($1) RETURNING id", f"autocommit {i}")
        await pool.fetchval("SELECT 1")
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await transaction.rollback()
        after = await asyncio.to_thread(db_snapshot, dsn, True)
    finally:
        await pool.close()
    return after - before


def test_a_window_counts_its_statements_by_kind_and_they_sum_to_its_statements(database: Database) -> None:
    if not database.pg_stat_statements:
        pytest.skip("pg_stat_statements is not available in this PostgreSQL")
    other = _scratch_database(database, f"by_kind_{os.getpid()}")  # no other test's statements in the window
    other.fetch("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    existing(other.dsn)
    delta = asyncio.run(_statements_of_a_window(other.dsn))
    # Every release runs asyncpg's reset, `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`:
    # one round trip, four statements in pg_stat_statements.
    releases = 3 + 2 + 1 + 1
    assert delta.by_kind == {"begin": 4, "commit": 3, "rollback": 1, "insert:simple_text": 5, "reset": 4 * releases,
                             "ping": 1}
    assert delta.statements == sum(delta.by_kind.values())


PLANTER = """
before=$(ls -d /tmp/insertbench-pg-* 2>/dev/null)
while :; do
    for root in /tmp/insertbench-pg-*; do
        echo "$before" | grep -qxF "$root" && continue
        for name in pwfile postgres.log dsn; do
            ln -s "$1" "$root/$name" 2>/dev/null && echo "planted $root/$name"
        done
    done
    sleep 0.005
done
"""


@pytest.mark.alone
@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user only when we are root")
def test_as_root_no_file_is_written_through_a_symlink_the_postgres_user_plants(tmp_path: Path) -> None:
    from harness.measure.postgres import _unprivileged_user
    from harness.measure.process import preexec

    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    victim.chmod(0o644)
    planter = subprocess.Popen(["sh", "-c", PLANTER, "planter", str(victim)], stdout=subprocess.PIPE, text=True,
                               cwd="/", preexec_fn=preexec(user=_unprivileged_user()))
    try:
        time.sleep(0.5)  # the planter has listed the directories that were there before
        proc, lines = _start_cli_postgres()
        root = _dsn_file(lines).parent
        owners = root.stat().st_uid, root.stat().st_mode & 0o777, (root / "data").stat().st_uid
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        planter.kill()
    planted = planter.communicate()[0]
    assert victim.read_text() == "root's file\n" and victim.stat().st_mode & 0o777 == 0o644, planted
    assert victim.stat().st_uid == 0
    assert str(root) not in planted  # it could not even create a symlink in the cluster's directory
    assert owners == (0, 0o711, _unprivileged_user().pw_uid)  # ours; the user owns only data/ (and sock/)
