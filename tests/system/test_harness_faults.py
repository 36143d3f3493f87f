"""Faults of a run, made for real: PostgreSQL killed mid-run, a server SIGKILLed mid-window or never ready, the
load generator killed, the results disk full. A fault of one sample fails that sample and the run goes on; a fault
no later sample can get past stops the run with one line that says what to do, keeps every finished sample, and
leaves no process and no directory behind."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from harness.measure.postgres import Database
from harness.measure.process import watch_exit
from tests._runs import Watched

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FAULT_APPS = Path(__file__).resolve().parents[1] / "fault_apps"
SHORT = ["--servers", "uvicorn", "--budget", "0", "--warmup", "0.3", "--concurrency", "16", "--no-readme"]


class Harness:
    """A harness run in the background: its output as it comes, its processes and directories watched."""

    def __init__(self, *args: str, results: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--results", str(results), *args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.watched, self.lines = Watched(self.proc), []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def run_id(self) -> str:
        return next(line.split()[1].rstrip(":") for line in self.lines if line.startswith("run "))

    def until(self, found: Callable[[], object], what: str, timeout: float = 120) -> object:
        """Wait (looking at its processes meanwhile) until ``found()`` gives something; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ended = self.proc.poll() is not None
            self.watched.look()
            if result := found():
                return result
            if ended:
                break
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        pytest.fail(f"no {what}: {self.output}{self.proc.stderr.read()}")

    def sampled(self, count: int = 1) -> None:
        self.until(lambda: sum(line.startswith(("✓", "✗")) for line in self.lines) >= count, f"{count} samples")

    def child(self, named: str) -> psutil.Process:
        """The harness's child process whose command line holds ``named``, once it runs."""
        def look() -> psutil.Process | None:
            with contextlib.suppress(psutil.NoSuchProcess):  # the harness has ended, or the child meanwhile
                return next((c for c in psutil.Process(self.proc.pid).children() if named in " ".join(c.cmdline())),
                            None)
            return None

        return self.until(look, f"process {named!r}")

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        """Its exit status and its stderr, once it has ended."""
        self.until(lambda: self.proc.poll() is not None, "end of the run", timeout)
        self.reader.join(timeout=10)
        return self.proc.returncode, self.proc.stderr.read()

    def left_nothing(self) -> None:
        assert self.watched.processes and self.watched.alive() == [], self.output
        assert self.watched.dirs and self.watched.left() == [], self.output


def harness(*args: str, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args, "--results", str(results)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def samples(results: Path, run_id: str) -> list[dict]:
    return json.loads((results / run_id / "run.json").read_text())["samples"]


def cells(results: Path) -> dict[str, dict]:
    (table,) = results.glob("*/matrix.csv")
    with open(table, newline="") as f:
        return {row["framework"]: row for row in csv.DictReader(f)}


def shared_memory_of(pid: int) -> list[str]:
    """The System V shared memory segments process ``pid`` created (PostgreSQL's interlock, say) that remain."""
    with contextlib.suppress(OSError):
        rows = [line.split() for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
        return [row[1] for row in rows if row[4] == str(pid)]
    return []


def test_postgres_killed_mid_run_stops_the_run_in_one_line_and_resume_finishes_it(tmp_path: Path) -> None:
    run = Harness("--frameworks", "asgi", "--db", "asyncpg", "--repeats", "3", "--duration", "1", *SHORT,
                  results=tmp_path)
    run.sampled(1)
    postmaster = run.child("insertbench-pg-")
    time.sleep(1.0)  # the second sample: its server starting, or its measured window (1.5 s or more in all)
    run.watched.look()
    postmaster.send_signal(signal.SIGKILL)
    status, stderr = run.finish()
    run_id, path = run.run_id, tmp_path / run.run_id / "run.json"
    assert status == 2, run.output + stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"insertbench: PostgreSQL (pid {postmaster.pid}) was killed by signal 9 (SIGKILL: "
                             "out of memory?"), stderr
    assert f"during sample 2 of asgi/uvicorn/asyncpg; 1 finished sample kept in {path}; " in stderr
    assert stderr.endswith(f"resume with: nox -s bench -- --resume {run_id} --results {tmp_path}\n"), stderr
    kept = samples(tmp_path, run_id)
    assert [(s["repeat"], s["status"]) for s in kept] == [(0, "ok")]  # the spoiled second sample is not kept
    run.left_nothing()
    assert any("insertbench-pg-" in d for d in run.watched.dirs)  # its data directory, gone
    assert shared_memory_of(postmaster.pid) == []
    resumed = harness("run", "--resume", run_id, results=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finished = samples(tmp_path, run_id)
    assert finished[0] == kept[0] and [(s["repeat"], s["status"]) for s in finished] == [(0, "ok"), (1, "ok"),
                                                                                          (2, "ok")]


def test_a_server_killed_mid_window_or_never_ready_fails_its_cell_and_the_rest_goes_on(tmp_path: Path) -> None:
    run = Harness("--apps", str(FAULT_APPS), "--frameworks", "killed,unready,ok", "--db", "none", "--repeats", "1",
                  "--duration", "1.5", "--ready-timeout", "3", *SHORT, results=tmp_path)
    status, stderr = run.finish()
    assert status == 0, run.output + stderr
    assert "2 samples failed; their reasons are in" in run.output
    found = cells(tmp_path)
    assert found["ok"]["status"] == "ok" and found["ok"]["verified"].lower() == "true"
    killed, unready = found["killed"], found["unready"]
    assert killed["status"] == "failed" and killed["server_cpu_us_per_insert"] == ""
    assert killed["reason"].startswith("server was killed by signal 9 (SIGKILL: out of memory?"), killed
    after = re.search(r"after (\d+\.\d) s of the measured window; its last lines: (.*)", killed["reason"])
    assert after and 0 < float(after[1]) < 1.5, killed  # the app killed itself 1 s after its first request
    assert "killed app: SIGKILL to my own process" in after[2]
    assert unready["status"] == "failed", unready
    assert unready["reason"].startswith("server not ready after 3 s: GET /health did not answer 200 (--ready-timeout "
                                        "SECONDS waits longer); its last lines: unready app: "), unready
    assert "server was killed by signal 9" in (tmp_path / run.run_id / "matrix.md").read_text()
    run.left_nothing()


def test_a_load_generator_that_dies_fails_its_sample_and_the_run_goes_on(tmp_path: Path) -> None:
    run = Harness("--frameworks", "asgi", "--db", "none", "--repeats", "2", "--duration", "1.5", *SHORT,
                  results=tmp_path)
    loadgen = run.child("loadgen-")
    time.sleep(0.8)  # into its measured window, after the 0.3 s warm-up
    loadgen.send_signal(signal.SIGKILL)
    status, stderr = run.finish()
    assert status == 0, run.output + stderr
    first, second = samples(tmp_path, run.run_id)
    assert first["status"] == "failed", first
    assert first["reason"].startswith(f"load generator (pid {loadgen.pid}) was killed by signal 9 (SIGKILL: "), first
    assert "before DONE" in first["reason"]
    assert second["status"] == "ok" and second["verified"], second
    run.left_nothing()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of its own, to fill; unmounted at the end."""
    mount = tmp_path / "results"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                              text=True)
    except FileNotFoundError:
        pytest.skip("no mount command here: a full results disk is made by mounting a small tmpfs")
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (root or CAP_SYS_ADMIN is needed): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory: Path) -> Path:
    """A file taking every free byte of the disk ``directory`` is on."""
    path = directory / "filler"
    with open(path, "wb", buffering=0) as file:
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            try:
                while True:
                    file.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return path


def test_a_full_results_disk_stops_the_run_and_what_it_wrote_stays_readable(small_disk: Path) -> None:
    run = Harness("--frameworks", "asgi", "--db", "none", "--repeats", "3", "--duration", "0.5", *SHORT,
                  results=small_disk)
    run.sampled(1)
    filler = fill(small_disk)
    status, stderr = run.finish()
    run_id, path = run.run_id, small_disk / run.run_id / "run.json"
    assert status == 2, run.output + stderr
    assert stderr.count("\n") == 1 and stderr.startswith(f"insertbench: results disk full at {small_disk} ("), stderr
    assert (f": 1 finished sample kept in {path}; free space there and resume with: nox -s bench -- --resume "
            f"{run_id} --results {small_disk}\n") in stderr
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]  # no half-written file beside it
    assert len(samples(small_disk, run_id)) == 1
    run.left_nothing()
    filler.unlink()
    rendered = harness("report", run_id, "--no-readme", results=small_disk)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    assert "asgi" in (path.parent / "matrix.md").read_text()
    resumed = harness("run", "--resume", run_id, results=small_disk)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [s["status"] for s in samples(small_disk, run_id)] == ["ok"] * 3


def test_a_server_named_by_a_dsn_is_lost_when_it_refuses_a_connection() -> None:
    db = Database(dsn="postgresql://u:secret@127.0.0.1:1/db", embedded=False)
    assert db.lost(probe=False) is None  # nothing is sent without a probe
    said = db.lost()
    assert said.startswith("PostgreSQL at postgresql://u:***@127.0.0.1:1/db stopped answering (")
    assert "secret" not in said


def test_a_death_is_timed_by_the_watching_thread_though_noticed_later() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    ended = watch_exit(proc.pid)
    time.sleep(0.2)
    killed_at = time.monotonic()
    proc.kill()
    time.sleep(0.5)  # noticed later, as a window's end notices its server's death
    assert proc.wait() == -signal.SIGKILL and ended() is not None
    assert killed_at <= ended() < killed_at + 0.3
