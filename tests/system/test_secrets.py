"""A DSN's password is never printed, stored, nor shown on any command line, however it is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.measure.postgres import Database, embedded, existing

ROOT = Path(__file__).resolve().parents[2]
LEAKY_APPS = Path(__file__).resolve().parents[1] / "leaky_apps"
QUICK = ["--frameworks", "asgi", "--servers", "uvicorn", "--db", "asyncpg", "--quick", "--no-readme"]


@pytest.fixture(scope="module")
def leaky_server() -> Iterator[Database]:
    """A PostgreSQL of its own, whose settings hold its password (as a replica's primary_conninfo would)."""
    with embedded() as db:
        password = db.dsn.split(":")[2].split("@")[0]
        db.fetch(f"ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 user=insertbench password={password}'")
        db.fetch("SELECT pg_reload_conf()")
        yield db


def _password(db: Database) -> str:
    return db.dsn.split(":")[2].split("@")[0]


def _spellings(db: Database) -> dict[str, str]:
    user_info, rest = db.dsn.split("://", 1)[1].split("@", 1)
    user = user_info.split(":")[0]
    return {"user-info, another case": f"PostgreSQL://{user_info}@{rest}",
            "query string": f"postgresql://{user}@{rest}?password={_password(db)}"}


def _watch_command_lines(secret: bytes, stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if secret in cmdline.read_bytes():
                    seen.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
        stop.wait(0.05)


def _run_watched(dsn: str, results: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The harness run with BENCH_DSN=dsn, and every command line that showed the password meanwhile."""
    seen: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_command_lines, args=(_secret(dsn).encode(), stop, seen))
    watcher.start()
    try:
        result = subprocess.run([sys.executable, "-m", "harness", "run", "--results", str(results), *args],
                                cwd=ROOT, env=dict(os.environ, BENCH_DSN=dsn), capture_output=True, text=True,
                                timeout=300)
    finally:
        stop.set()
        watcher.join()
    return result, seen


def _secret(dsn: str) -> str:
    return dsn.rsplit("password=", 1)[1] if "password=" in dsn else dsn.split(":")[2].split("@")[0]


def _written(results: Path, secret: str) -> list[Path]:
    return [p for p in results.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("spelling", ["user-info, another case", "query string"])
def test_a_real_run_never_shows_the_password(tmp_path: Path, leaky_server: Database, spelling: str) -> None:
    dsn = _spellings(leaky_server)[spelling]
    result, seen = _run_watched(dsn, tmp_path, *QUICK)
    assert result.returncode == 0, result.stdout + result.stderr
    secret = _password(leaky_server)
    assert secret not in result.stdout + result.stderr
    assert _written(tmp_path, secret) == []
    assert seen == []
    (run_json,) = tmp_path.glob("*/run.json")
    run = json.loads(run_json.read_text())
    assert [s["status"] for s in run["samples"]] == ["ok"], run["samples"]  # the apps got a DSN they accept
    settings = run["environment"]["postgres"]["settings"]
    assert "primary_conninfo" not in settings and settings["fsync"] == "off"


def test_a_server_error_quoting_the_dsn_is_recorded_without_the_password(tmp_path: Path,
                                                                         leaky_server: Database) -> None:
    dsn = _spellings(leaky_server)["query string"]
    result, _ = _run_watched(dsn, tmp_path, "--apps", str(LEAKY_APPS), "--servers", "uvicorn", "--db", "asyncpg",
                             "--quick", "--no-readme")
    assert result.returncode == 0, result.stdout + result.stderr
    secret = _password(leaky_server)
    (run_json,) = tmp_path.glob("*/run.json")
    (sample,) = json.loads(run_json.read_text())["samples"]
    assert "cannot connect to postgresql://insertbench@" in sample["reason"]  # the reason is recorded...
    assert "password=***" in sample["reason"] and "(password *** rejected)" in sample["reason"]
    assert secret not in result.stdout + result.stderr  # ...without the password
    assert _written(tmp_path, secret) == []


def test_only_settings_that_bear_on_performance_are_recorded(leaky_server: Database) -> None:
    db = existing(leaky_server.dsn)
    assert "primary_conninfo" not in db.settings
    assert {"fsync", "shared_buffers", "max_connections"} <= set(db.settings)
    assert _password(leaky_server) not in json.dumps(db.describe())


@pytest.mark.skipif(shutil.which("nox") is None, reason="nox is not installed (pip install nox)")
def test_nox_does_not_echo_a_password_given_with_dsn(tmp_path: Path) -> None:
    reuse = ["-R"] if (ROOT / ".nox" / "bench").is_dir() else []
    dsn = "postgresql://someone:n0t-in-any-log@127.0.0.1:1/db"
    result = subprocess.run(["nox", *reuse, "-s", "bench", "--", "--dsn", dsn, "--quick", "--results", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "cannot use postgresql://someone:***@127.0.0.1:1/db" in output, output
    assert "n0t-in-any-log" not in output  # neither in nox's echo of the command nor in its failure line
    assert "set BENCH_DSN" in output
