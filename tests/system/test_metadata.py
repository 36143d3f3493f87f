"""harness.measure.metadata on this machine: a run's environment, as collect() gathers it (it asks git)."""

from __future__ import annotations

import sys

from harness.measure.metadata import collect, python_build


def test_a_run_records_the_build():
    env = collect({"server": [1]}, {"version": "15"})
    assert env["python_build"]["executable"] == python_build()["executable"]
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
