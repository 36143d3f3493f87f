"""Ctrl-C through nox, as a user types it: the run stops, leaves no process and no directory, and says how to resume.

nox's own Ctrl-C handling gives a command half a second before SIGTERM and SIGKILL; the harness needs longer
to stop its servers and PostgreSQL. The terminal sends SIGINT to the whole foreground process group (nox and
the harness), which is what these tests send.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from harness.measure.process import owned_tempdir, remove_stale
from tests._runs import Watched

ROOT = Path(__file__).resolve().parents[2]
NOX = shutil.which("nox")
CELLS = ["--quick", "--frameworks", "asgi", "--servers", "uvicorn", "--db", "none,asyncpg,coalesced", "--no-readme"]


def _until_the_third_sample(nox: subprocess.Popen, watched: Watched, lines: list[str]) -> str:
    """Read the run's output until two samples are measured; return the run id."""
    assert nox.stdout is not None
    deadline, finished, run_id = time.monotonic() + 600, 0, ""  # nox may first make its virtualenv
    while time.monotonic() < deadline and finished < 2:
        line = nox.stdout.readline()
        if not line:
            break
        lines.append(line)
        watched.look()
        run_id = run_id or (line.split()[1].rstrip(":") if line.startswith("run ") else "")
        finished += line.lstrip().startswith(("✓", "✗"))
    if finished < 2:
        os.killpg(nox.pid, signal.SIGKILL)
        pytest.fail("the run did not reach its third sample: " + "".join(lines))
    time.sleep(0.3)  # the third sample's server is starting
    watched.look()
    return run_id


@pytest.mark.skipif(NOX is None, reason="nox is not installed (pip install nox)")
@pytest.mark.parametrize("interrupts", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_through_nox_stops_cleanly_and_says_how_to_resume(tmp_path: Path, interrupts: int) -> None:
    reuse = ["-R"] if (ROOT / ".nox" / "bench").is_dir() else []  # its virtualenv as it is, as a user's rerun
    nox = subprocess.Popen([NOX, *reuse, "-s", "bench", "--", *CELLS, "--results", str(tmp_path)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    watched, lines = Watched(nox), []
    run_id = _until_the_third_sample(nox, watched, lines)
    os.killpg(nox.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    if interrupts == 2:
        time.sleep(0.3)  # the harness is stopping its server and PostgreSQL
        os.killpg(nox.pid, signal.SIGINT)
    output = "".join(lines) + nox.communicate(timeout=120)[0]
    assert nox.returncode != 0, output
    assert f"finish with: nox -s bench -- --resume {run_id}" in output
    assert watched.dirs and any("insertbench-pg-" in d for d in watched.dirs), watched.dirs  # we saw its cluster
    pgrep = subprocess.run(["pgrep", "-fa", "postgres|uvicorn|granian|loadgen"], capture_output=True, text=True)
    left = [line for line in pgrep.stdout.splitlines() if int(line.split()[0]) in watched.processes]
    assert left == [] and watched.alive() == [], output
    assert [d for d in watched.dirs if Path(d).exists()] == [], output
    samples = json.loads((tmp_path / run_id / "run.json").read_text())["samples"]
    assert len(samples) == 2  # the resume point


@pytest.mark.alone  # a harness run or an embedded PostgreSQL started elsewhere removes the stale directory first
def test_a_later_run_removes_the_directories_of_a_killed_one() -> None:
    """`kill -9` leaves a run's directories behind (its children die with it); the next run removes them."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", "postgres"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(3)]
    assert "Ctrl-C stops it" in lines[-1], lines
    stale = Path(lines[1].split("$(cat ", 1)[1].split(")", 1)[0]).parent
    postmaster = next(p for p in psutil.Process(proc.pid).children() if "postgres" in p.name())
    proc.kill()
    proc.wait()
    postmaster.wait(timeout=30)  # told to stop by the kernel when its parent died
    assert stale.is_dir()
    live = owned_tempdir("test")  # ours, and we are alive
    unmarked = Path(tempfile.gettempdir(), f"insertbench-unmarked-{os.getpid()}")  # not known to be ours
    unmarked.mkdir()
    try:
        removed = remove_stale()
        assert stale in removed and not stale.exists()
        assert live.is_dir() and unmarked.is_dir()
    finally:
        shutil.rmtree(live)
        unmarked.rmdir()
