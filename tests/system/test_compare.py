"""`python -m harness compare` as a user runs it: every cell printed, the comparison written, a missing run named."""

from __future__ import annotations

import subprocess
import sys

from tests.unit.test_compare import ROOT, fixture, scaled, write_run


def test_the_command_prints_every_cell_and_writes_the_comparison(tmp_path):
    write_run(tmp_path, "runA", scaled(fixture(), {}, {"asgi/uvicorn/none": 183_600}))
    write_run(tmp_path, "runB", scaled(fixture(), {"asgi/uvicorn/orm": 1.5}, {"asgi/uvicorn/none": 190_000}))
    done = subprocess.run([sys.executable, "-m", "harness", "compare", "runA", "runB", "--results", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith(("asgi", "fastapi", "seed"))}
    assert len(lines) == 18
    assert "slower" in lines["asgi/uvicorn/orm"] and "1.500" in lines["asgi/uvicorn/orm"]
    assert lines["asgi/uvicorn/none"].rstrip().endswith("slower")  # 190k vs 183.6k instructions: +3.5%
    md = (tmp_path / "compare-runA-vs-runB.md").read_text()
    assert md.startswith("# runB compared with runA") and "| `asgi/uvicorn/orm` |" in md


def test_the_command_names_the_runs_there_when_one_is_missing(tmp_path):
    write_run(tmp_path, "runA", fixture())
    done = subprocess.run([sys.executable, "-m", "harness", "compare", "runA", "nope", "--results", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == f"insertbench: no run 'nope' in {tmp_path}; runs there: runA\n"
