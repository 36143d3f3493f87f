"""The raw uvloop floor: a real server, the real load generator, a figure and every request answered."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_floor_measures_a_raw_uvloop_server():
    done = subprocess.run([sys.executable, "-m", "harness", "floor", "--repeats", "1", "--duration", "0.5",
                           "--warmup", "0.2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = re.search(r"raw uvloop server #1: ([\d.]+) µs of CPU per request .* ([\d,]+) requests/s, 0 errors",
                      done.stdout)
    assert found and 0 < float(found.group(1)) < 1000 and int(found.group(2).replace(",", "")) > 100
    assert "floor: median" in done.stdout


def test_floor_refuses_nonsense_with_one_line():
    done = subprocess.run([sys.executable, "-m", "harness", "floor", "--duration", "0"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "positive numbers" in done.stderr
