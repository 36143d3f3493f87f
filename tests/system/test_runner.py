"""The harness end to end: a tiny real matrix, faulty apps, Ctrl-C and --resume, --dsn, bad options."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from harness.measure.apps import discover
from harness.measure.postgres import Database

ROOT = Path(__file__).resolve().parents[2]
FAULT_APPS = Path(__file__).resolve().parents[1] / "fault_apps"
TINY = ["--repeats", "1", "--budget", "0", "--duration", "0.5", "--warmup", "0.2", "--concurrency", "16",
        "--no-readme"]
OURS = ("uvicorn", "granian", "loadgen-", "insertbench-pg-", "apps.asgi.app", "fault_apps.")
RUN_MARK = "INSERTBENCH_TEST_RUN"  # inherited by everything a run starts


def harness(*args: str, results: Path, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "run", "--results", str(results), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def matrix(results: Path) -> dict[tuple[str, str, str], dict]:
    (run_dir,) = [p.parent for p in results.glob("*/run.json")]
    with open(run_dir / "matrix.csv", newline="") as f:
        return {(r["framework"], r["server"], r["db"]): r for r in csv.DictReader(f)}


def our_processes(run: str) -> set[int]:
    """The servers, load generators and clusters of the run whose environment holds RUN_MARK=run: other suites'
    may come and go on a shared machine meanwhile."""
    found = set()
    for proc in psutil.process_iter(["cmdline", "environ"]):
        line = " ".join(proc.info["cmdline"] or [])
        if any(mark in line for mark in OURS) and (proc.info["environ"] or {}).get(RUN_MARK) == run:
            found.add(proc.pid)
    return found


def test_a_tiny_matrix_is_measured_and_verified(tmp_path: Path) -> None:
    result = harness("--frameworks", "asgi", "--servers", "uvicorn,granian", "--db", "none,asyncpg,orm", *TINY,
                     results=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cells = matrix(tmp_path)
    assert len(cells) == 6
    for key, row in cells.items():
        assert row["status"] == "ok" and row["verified"].lower() == "true", (key, row)
        assert float(row["server_cpu_us_per_insert"]) > 0
        assert float(row["rps"]) > 0
        assert 5 < float(row["server_rss_warm_mib"]) <= float(row["server_rss_end_mib"]) * 1.5 < 2000, (key, row)
    assert float(cells["asgi", "uvicorn", "orm"]["statements_per_insert"]) == pytest.approx(3, rel=0.05)
    assert float(cells["asgi", "uvicorn", "asyncpg"]["statements_per_insert"]) == pytest.approx(1, rel=0.05)
    assert float(cells["asgi", "uvicorn", "asyncpg"]["transactions_per_insert"]) == pytest.approx(1, rel=0.05)
    run = json.loads(next(tmp_path.glob("*/run.json")).read_text())
    assert run["environment"]["postgres"]["settings"]["fsync"] == "off"
    assert "***" in run["environment"]["postgres"]["dsn"]
    assert all(s["verified"] for s in run["samples"])
    build = run["environment"]["python_build"]
    assert f"{build['executable']} (configure: " in " ".join(result.stdout.split())  # named before any cell


def test_faulty_cells_are_reported_and_the_rest_finishes(tmp_path: Path) -> None:
    result = harness("--apps", str(FAULT_APPS), "--frameworks", "crash,errors,ok", "--servers", "uvicorn", "--db",
                     "asyncpg", *TINY, results=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cells = matrix(tmp_path)
    assert cells["ok", "uvicorn", "asyncpg"]["status"] == "ok"
    crash, errors = cells["crash", "uvicorn", "asyncpg"], cells["errors", "uvicorn", "asyncpg"]
    assert crash["status"] == "failed" and "dies at startup on purpose" in crash["reason"]
    assert errors["status"] == "failed" and "500" in errors["reason"]
    assert crash["server_cpu_us_per_insert"] == "" and errors["server_cpu_us_per_insert"] == ""


def _run_id(proc: subprocess.Popen, lines: list[str], cluster_up: Callable[[], None] = lambda: None) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    run_id = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("run ") and run_id is None:
            run_id = line.split()[1].rstrip(":")
        if line.startswith("PostgreSQL "):  # its cluster is up, the first sample seconds away
            cluster_up()
        if "✓" in line and run_id:
            return run_id
    proc.kill()
    pytest.fail("no sample finished: " + "".join(lines))


def test_ctrl_c_keeps_samples_leaves_nothing_and_resume_completes(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    before = our_processes(mark)
    args = ["--frameworks", "asgi", "--servers", "uvicorn", "--db", "none,asyncpg", "--repeats", "2", "--budget", "0",
            "--duration", "1", "--warmup", "0.2", "--concurrency", "16", "--no-readme"]
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--results", str(tmp_path), *args],
                            cwd=ROOT, env=dict(os.environ, **{RUN_MARK: mark}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    seen: set[int] = set()
    run_id = _run_id(proc, lines, lambda: seen.update(our_processes(mark)))
    proc.send_signal(signal.SIGINT)
    output = "".join(lines) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    assert f"--resume {run_id}" in output
    assert seen, "the run's cluster carried its mark"
    time.sleep(0.5)
    assert our_processes(mark) - before == set()
    kept = json.loads((tmp_path / run_id / "run.json").read_text())["samples"]
    assert 1 <= len(kept) < 4
    result = harness("--resume", run_id, results=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    samples = json.loads((tmp_path / run_id / "run.json").read_text())["samples"]
    assert len(samples) == 4 and samples[: len(kept)] == kept
    assert {(s["db"], s["repeat"]) for s in samples} == {(d, r) for d in ("none", "asyncpg") for r in (0, 1)}


def test_instructions_are_counted_for_a_tiny_matrix(tmp_path: Path) -> None:
    result = harness("--frameworks", "asgi", "--servers", "uvicorn,granian", "--db", "none", "--instructions",
                     "--instruction-requests", "300", *TINY, results=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[instructions] #1:" in result.stdout
    cells = matrix(tmp_path)
    for server in ("uvicorn", "granian"):
        row = cells["asgi", server, "none"]
        # the bare app answers a POST in 140-200k instructions on CPython 3.11 (uvicorn ~168k, granian ~147k)
        assert 100_000 < float(row["instructions_per_insert"]) < 400_000, row
        assert float(row["instructions_per_request"]) == pytest.approx(float(row["instructions_per_insert"]))
    run = json.loads(next(tmp_path.glob("*/run.json")).read_text())
    counted = [s for s in run["samples"] if s["kind"] == "instructions"]
    assert len(counted) == 2 and all(s["verified"] and s["requests_ok"] == 300 for s in counted)
    md = next(tmp_path.glob("*/matrix.md")).read_text()
    assert "## Instructions per insert" in md and "300 requests at 4 connections" in md


def test_a_profiled_cell_gets_profile_csv_and_a_flame_graph(tmp_path: Path) -> None:
    result = harness("--frameworks", "asgi", "--servers", "granian", "--db", "none", "--profile", *TINY,
                     results=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[profile] #1:" in result.stdout
    (run_dir,) = [p.parent for p in tmp_path.glob("*/run.json")]
    with open(run_dir / "profile.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["package"] for r in rows} >= {"granian", "kernel"}
    assert sum(float(r["share"]) for r in rows) == pytest.approx(1, abs=1e-3)
    (flame,) = run_dir.glob("profiles/*.speedscope.json")
    assert json.loads(flame.read_text())["$schema"].startswith("https://www.speedscope.app/")
    assert (run_dir / "profile.png").stat().st_size > 10_000
    assert "## Where the CPU goes" in (run_dir / "matrix.md").read_text()


def test_resume_refuses_a_run_made_elsewhere(tmp_path: Path) -> None:
    result = harness("--frameworks", "asgi", "--servers", "uvicorn", "--db", "none", *TINY, results=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = tmp_path.glob("*/run.json")
    data = json.loads(path.read_text())
    data["environment"]["git_commit"] = "0" * 40
    data["environment"]["packages"]["uvicorn"] = "0.0.1"
    data["options"]["repeats"] = 2  # so the resumption would have a sample to add
    path.write_text(json.dumps(data))
    before = path.read_text()
    result = harness("--resume", path.parent.name, results=tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot be resumed here" in result.stderr and "commit (0000000 → " in result.stderr
    assert "package versions (uvicorn 0.0.1 → " in result.stderr and result.stderr.count("\n") == 1
    assert path.read_text() == before  # nothing added


def test_dsn_mode_never_shows_the_password(tmp_path: Path, database: Database) -> None:
    password = database.dsn.split(":")[2].split("@")[0]
    result = harness("--dsn", database.dsn, "--frameworks", "asgi", "--servers", "uvicorn", "--db", "asyncpg",
                     *TINY, results=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert password not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".md"):
            assert password not in path.read_text(), path
    assert matrix(tmp_path)["asgi", "uvicorn", "asyncpg"]["status"] == "ok"


@pytest.mark.parametrize(("args", "names"), [
    (["--frameworks", "flask"], "valid: " + ", ".join(discover())),
    (["--servers", "gunicorn"], "valid: uvicorn, granian"),
    (["--db", "mongo"], "valid: none, asyncpg, coalesced, core, orm"),
    (["--frameworks", "seed", "--db", "none"], "nothing to run"),
    (["--resume", "no-such-run"], "no run 'no-such-run'"),
])
def test_bad_options_give_one_line_and_change_nothing(tmp_path: Path, args: list[str], names: str) -> None:
    result = harness(*args, results=tmp_path, timeout=60)
    assert result.returncode == 2
    assert names in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not list(tmp_path.iterdir())
