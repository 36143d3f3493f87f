"""--soak end to end: two tiny apps, one steady and one that keeps 1 KiB of every request, each served by one real
server for ten seconds against a real PostgreSQL; the grower is reported leaking, the steady app is not. Bad
options are refused naming the fix; Ctrl-C keeps the windows done, and --resume soaks the cell again."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOAK_APPS = Path(__file__).resolve().parents[1] / "soak_apps"
CELLS = "steady/uvicorn/asyncpg,grower/uvicorn/asyncpg"


def harness(*args: str, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "run", "--results", str(results), "--no-readme", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_a_soak_reports_the_grower_leaking_and_the_steady_app_not(tmp_path: Path) -> None:
    result = harness("--apps", str(SOAK_APPS), "--soak", "0.17", "--cells", CELLS, "--duration", "2", "--warmup",
                     "0.5", "--concurrency", "16", results=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [p.parent for p in tmp_path.glob("*/run.json")]
    run = json.loads((run_dir / "run.json").read_text())
    windows = [s for s in run["samples"] if s["kind"] == "soak"]
    assert run["cells"] == [] and len(windows) == 10 == len(run["samples"])  # a soak alone: no matrix samples
    assert all(s["verified"] and s["status"] == "ok" and s["server_rss_end_mib"] for s in windows), windows
    with open(run_dir / "soak.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["framework"] for r in rows] == ["steady"] * 5 + ["grower"] * 5
    grower = [float(r["server_rss_end_mib"]) for r in rows if r["framework"] == "grower"]
    assert grower[-1] - grower[0] > 5, grower  # MiB: thousands of requests a second, 1 KiB each
    assert (run_dir / "soak.png").stat().st_size > 10_000
    md = (run_dir / "matrix.md").read_text()
    assert "## Soak" in md and "## Environment and method" in md and "## Every cell" not in md
    verdicts = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in md.splitlines()
                if line.startswith("| `")}
    assert verdicts["`grower/uvicorn/asyncpg`"] == "**leaking**", md
    assert verdicts["`steady/uvicorn/asyncpg`"] in ("steady", "unclear"), md
    assert "soak grower/uvicorn/asyncpg:" in result.stdout and "leaking" in result.stdout
    assert not (run_dir / "matrix.csv").exists()
    again = subprocess.run([sys.executable, "-m", "harness", "report", str(run_dir), "--no-readme"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)  # re-rendered from run.json alone
    assert again.returncode == 0, again.stderr
    assert (run_dir / "matrix.md").read_text() == md


def test_soak_options_that_cannot_work_are_refused_naming_the_fix(tmp_path: Path) -> None:
    """Through the command line (tests/unit/test_soak.py checks every message): exit 2, the fix in one line."""
    for args, expected in [(["--soak", "-1", "--cells", "asgi/uvicorn/asyncpg"], "expected a finite number above 0"),
                           (["--soak", "1", "--cells", "nope/uvicorn/asyncpg"], "no app 'nope'; apps: ")]:
        result = harness(*args, results=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert any(expected in line for line in result.stderr.splitlines()), (args, result.stderr)
    assert not list(tmp_path.iterdir())


def test_ctrl_c_keeps_the_finished_windows_and_resume_soaks_the_cell_again(tmp_path: Path) -> None:
    args = ["--soak", "0.1", "--cells", "asgi/uvicorn/asyncpg", "--duration", "1.5", "--warmup", "0.2",
            "--concurrency", "16", "--no-readme"]
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--results", str(tmp_path), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # until the first window lands
        lines.append(line)
        if line.startswith("✓ soak asgi/uvicorn/asyncpg 1/4"):
            break
    proc.send_signal(signal.SIGINT)
    output = "".join(lines) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    run_id = lines[0].split()[1].rstrip(":")
    kept = [s for s in json.loads((tmp_path / run_id / "run.json").read_text())["samples"] if s["kind"] == "soak"]
    assert 1 <= len(kept) < 4 and all(s["verified"] for s in kept), output
    result = harness("--resume", run_id, results=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"cut short after {len(kept)} windows: soaking it again from the start" in result.stdout
    samples = json.loads((tmp_path / run_id / "run.json").read_text())["samples"]
    assert [s["repeat"] for s in samples] == [0, 1, 2, 3] and all(s["verified"] for s in samples)
    assert samples[0]["started_at"] >= kept[-1]["started_at"]  # the soak's windows are one server's
    assert "## Soak" in (tmp_path / run_id / "matrix.md").read_text()
