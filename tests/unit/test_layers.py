"""The database layers' configuration, before any connection: a bad environment says what to set."""

from __future__ import annotations

import pytest

from apps._db import ConfigError, layer_from_env


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, ["BENCH_DB", "none, asyncpg, coalesced, core, orm"]),
        ({"BENCH_DB": "sqlite"}, ["'sqlite'", "none, asyncpg, coalesced, core, orm"]),
        ({"BENCH_DB": "orm"}, ["BENCH_DSN"]),
        ({"BENCH_DB": "asyncpg", "BENCH_DSN": "mysql://x"}, ["BENCH_DSN", "postgresql://"]),
        ({"BENCH_DB": "none", "BENCH_POOL_SIZE": "many"}, ["BENCH_POOL_SIZE"]),
    ],
)
def test_a_bad_configuration_says_what_to_set(environ: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        layer_from_env(environ)
    for name in names:
        assert name in str(raised.value)
