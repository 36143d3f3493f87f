"""The wings and the axes, checked with real processes: the rendering wing imported in a fresh interpreter loads
nothing of the measuring wing, and a throwaway third server's modules are what --app-python is checked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import axes
from harness.errors import UsageError
from harness.measure import own_checks
from tests.unit.test_axes import THIRD

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_rendering_wing_loads_nothing_of_the_measuring_wing() -> None:
    code = ("import sys, pkgutil, importlib, harness.report, harness.analysis\n"
            "for pkg in (harness.report, harness.analysis):\n"
            "    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(info.name)\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('harness.measure'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_the_app_python_check_asks_for_a_third_servers_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(axes.SERVERS, "third", THIRD)
    own = SimpleNamespace(python=sys.executable)  # the check asks that interpreter for the modules
    with pytest.raises(UsageError, match=r"third is not importable .*missing third_server"):
        own_checks.check_servers(own, ["uvicorn", "third"])
    own_checks.check_servers(own, ["uvicorn"])  # its modules are installed here
