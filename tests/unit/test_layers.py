"""The database layers' configuration, before any connection: a bad environment says what to set."""

from __future__ import annotations

import pytest

from apps._db import KNOBS, LAYERS, ConfigError, knobs_from_env, layer_from_env, timeouts_from_env

NAMES = ", ".join(LAYERS)
DSN = "postgresql://nobody:x@127.0.0.1:1/none"  # never connected to: a layer does no I/O until start()


def with_knob(name: str, variable: str, value: str) -> dict[str, str]:
    return {"BENCH_DB": name, "BENCH_DSN": DSN, variable: value}


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, ["BENCH_DB", NAMES]),
        ({"BENCH_DB": "sqlite"}, ["'sqlite'", NAMES]),
        ({"BENCH_DB": "orm"}, ["BENCH_DSN"]),
        ({"BENCH_DB": "asyncpg", "BENCH_DSN": "mysql://x"}, ["BENCH_DSN", "postgresql://"]),
        ({"BENCH_DB": "psycopg"}, ["BENCH_DSN"]),
        ({"BENCH_DB": "none", "BENCH_POOL_SIZE": "many"}, ["BENCH_POOL_SIZE"]),
        # a bound that is no positive number of seconds
        (with_knob("asyncpg", "BENCH_ACQUIRE_TIMEOUT", "0"), ["BENCH_ACQUIRE_TIMEOUT='0'", "seconds", "default 10"]),
        (with_knob("core", "BENCH_STATEMENT_TIMEOUT", "soon"), ["BENCH_STATEMENT_TIMEOUT='soon'", "default 30"]),
        (with_knob("psycopg", "BENCH_STATEMENT_TIMEOUT", "inf"), ["BENCH_STATEMENT_TIMEOUT='inf'"]),
        (with_knob("coalesced", "BENCH_ACQUIRE_TIMEOUT", "nan"), ["BENCH_ACQUIRE_TIMEOUT='nan'"]),
        # a knob's value it does not take
        (with_knob("core", "BENCH_AUTOCOMMIT", "yes"), ["BENCH_AUTOCOMMIT='yes'", "0, 1", "default 0"]),
        (with_knob("orm", "BENCH_PRE_PING", "true"), ["BENCH_PRE_PING='true'", "0, 1"]),
        (with_knob("asyncpg", "BENCH_TRANSACTION", ""), ["BENCH_TRANSACTION=''", "0, 1"]),
        (with_knob("coalesced", "BENCH_POOL_RESET", "2"), ["BENCH_POOL_RESET='2'", "0, 1"]),
        (with_knob("core", "BENCH_SA_DRIVER", "pg8000"), ["BENCH_SA_DRIVER='pg8000'", "asyncpg, psycopg"]),
        # a knob set on a layer it does not change
        (with_knob("asyncpg", "BENCH_AUTOCOMMIT", "1"), ["BENCH_AUTOCOMMIT", "core and orm", "'asyncpg'"]),
        (with_knob("core", "BENCH_TRANSACTION", "1"),
         ["BENCH_TRANSACTION", "the asyncpg and psycopg layers only", "'core'"]),
        (with_knob("orm", "BENCH_POOL_RESET", "1"), ["BENCH_POOL_RESET", "asyncpg and coalesced"]),
        (with_knob("psycopg", "BENCH_PRE_PING", "1"), ["BENCH_PRE_PING", "core and orm", "'psycopg'"]),
        (with_knob("psycopg", "BENCH_SA_DRIVER", "psycopg"), ["BENCH_SA_DRIVER", "core and orm"]),
        (with_knob("none", "BENCH_AUTOCOMMIT", "1"), ["BENCH_AUTOCOMMIT", "'none'"]),
    ],
)
def test_a_bad_configuration_says_what_to_set(environ: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        layer_from_env(environ)
    for name in names:
        assert name in str(raised.value)


def test_knobs_become_the_layer_s_keywords() -> None:
    assert knobs_from_env("core", {}) == {"autocommit": False, "pre_ping": False, "sa_driver": "asyncpg"}
    assert knobs_from_env("orm", {"BENCH_AUTOCOMMIT": "1", "BENCH_SA_DRIVER": "psycopg"}) == {
        "autocommit": True, "pre_ping": False, "sa_driver": "psycopg"}
    assert knobs_from_env("asyncpg", {"BENCH_TRANSACTION": "1"}) == {"transaction": True, "pool_reset": False}
    assert knobs_from_env("coalesced", {"BENCH_POOL_RESET": "1"}) == {"pool_reset": True}
    # a knob at its default is no change, whatever the layer
    assert knobs_from_env("psycopg", {"BENCH_AUTOCOMMIT": "0", "BENCH_SA_DRIVER": "asyncpg"}) == {"transaction": False}
    assert knobs_from_env("psycopg", {"BENCH_TRANSACTION": "1"}) == {"transaction": True}
    assert knobs_from_env("none", {}) == {}


def test_the_bounds_are_seconds_every_layer_with_a_database_takes() -> None:
    assert timeouts_from_env({}) == {"acquire_timeout": 10.0, "statement_timeout": 30.0}
    assert timeouts_from_env({"BENCH_ACQUIRE_TIMEOUT": "0.5", "BENCH_STATEMENT_TIMEOUT": "2"}) == {
        "acquire_timeout": 0.5, "statement_timeout": 2.0}
    bounds = {"BENCH_ACQUIRE_TIMEOUT": "1", "BENCH_STATEMENT_TIMEOUT": "1"}
    for name in LAYERS:  # the `none` layer has no database to bound, and ignores them
        layer_from_env({"BENCH_DB": name, "BENCH_DSN": DSN, **bounds})


@pytest.mark.parametrize("name", sorted({layer for _, layers in KNOBS.values() for layer in layers}))
def test_every_layer_a_knob_names_takes_it(name: str) -> None:
    assert name in LAYERS
    changed = {variable: values[-1] for variable, (values, layers) in KNOBS.items() if name in layers}
    layer_from_env({"BENCH_DB": name, "BENCH_DSN": DSN, **changed})  # each knob's last value, all at once
