"""Shared fixtures: one real embedded PostgreSQL for the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness.measure.postgres import Database, embedded


@pytest.fixture(scope="session")
def database() -> Iterator[Database]:
    """A running embedded PostgreSQL with ``simple_text`` created (or the server named by BENCH_TEST_DSN)."""
    if dsn := os.environ.get("BENCH_TEST_DSN"):
        from harness.measure.postgres import existing

        yield existing(dsn)
        return
    with embedded() as db:
        yield db
