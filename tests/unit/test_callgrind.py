"""harness.measure.callgrind without running valgrind: a missing tool named with how to get it, and a dump read for
its totals and the collector's share."""

from __future__ import annotations

import os
import shutil

import pytest

from harness.errors import UsageError
from harness.measure.apps import discover
from harness.measure.callgrind import (
    CallgrindError,
    ValgrindMissing,
    callgrind_server,
    read_inclusive,
    read_totals,
    require_valgrind,
)

APPS = discover()
NO_DB = "postgresql://127.0.0.1:9/unused"


def test_missing_valgrind_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValgrindMissing) as caught:
        require_valgrind()
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, UsageError)
    assert "apt-get install valgrind" in message and "dnf install valgrind" in message
    with pytest.raises(ValgrindMissing), callgrind_server(APPS["asgi"], "uvicorn", db="none", dsn=NO_DB,
                                                          workdir=tmp_path):  # fmt: skip
        pass
    assert not list(tmp_path.iterdir())  # nothing was started or created


def test_missing_callgrind_control_is_named(valgrind, tmp_path, monkeypatch):
    os.symlink(shutil.which("valgrind"), tmp_path / "valgrind")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValgrindMissing, match="need callgrind_control, not found"):
        require_valgrind()


DUMP = """# callgrind format
version: 1
positions: line
events: Ir
summary: 0

ob=(1) /lib/libpython.so
fl=(1) gcmodule.c
fn=(1) gc_collect_main
10 5
cfn=(2) visit_reachable
calls=3 20
+2 100
fn=(2)
20 100
fn=(3) main
1 7
cfn=(1)
calls=1 10
* 105
fn=(4) gc_collect_main'2
5 1000
totals: 1112
"""


def test_a_dump_is_read_for_its_totals_and_the_gc_share(tmp_path):
    dump = tmp_path / "callgrind.1.1"
    dump.write_text(DUMP)
    assert read_totals(dump) == 1112  # not summary:, which valgrind 3.19 leaves at 0
    assert read_inclusive(dump, "gc_collect_main") == 105  # itself and what it called, once
    assert read_inclusive(dump, "visit_reachable") == 100
    assert read_inclusive(dump, "no_such_function") is None
    dump.write_text(DUMP.replace("totals: 1112\n", ""))
    with pytest.raises(CallgrindError, match="no totals"):
        read_totals(dump)
