"""harness.measure.postgres without a server: the ways out when PostgreSQL is not found, a password redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.measure.postgres import PostgresError, _from_env, find_bindir, redact


def test_bindir_without_postgres_gives_the_ways_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_PG_BINDIR", str(tmp_path))
    with pytest.raises(PostgresError) as raised:
        find_bindir(lookups=[_from_env])
    message = str(raised.value)
    for way_out in ("BENCH_PG_BINDIR", "install PostgreSQL", "--dsn", "docker/"):
        assert way_out in message


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://u:s3cret@127.0.0.1:5432/db") == "postgresql://u:***@127.0.0.1:5432/db"
    assert redact("postgresql://u@127.0.0.1/db") == "postgresql://u@127.0.0.1/db"
