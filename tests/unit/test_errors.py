"""What the harness says when something dies or a disk fills: the pure parts of its fault messages."""

from __future__ import annotations

import errno
import json
import signal
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.errors import RunStopped, disk_full
from harness.measure.postgres import Database
from harness.measure.postmaster import DSM_MAGIC, dsm_segments
from harness.measure.process import describe_exit, group_running
from harness.measure.resume import resume_command, writing
from harness.measure.servers import Server
from harness.model import Run


@pytest.mark.parametrize(("returncode", "said"), [
    (0, "exited with status 0"),
    (3, "exited with status 3"),
    (-9, "was killed by signal 9 (SIGKILL: out of memory? dmesg names what the kernel's OOM killer killed)"),
    (-11, "was killed by signal 11 (SIGSEGV: a crash in native code)"),
    (-6, "was killed by signal 6 (SIGABRT: aborted, by an assertion or a fatal error in native code)"),
    (-signal.SIGUSR1, f"was killed by signal {int(signal.SIGUSR1)} (SIGUSR1)"),
    (-200, "was killed by signal 200"),
    (None, "is still running"),
])
def test_an_exit_is_described_by_its_status_or_its_signal_and_what_sends_it(returncode: int | None, said: str) -> None:
    assert describe_exit(returncode) == said


def test_a_full_disk_is_told_apart_through_what_an_error_was_raised_from() -> None:
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(ValueError("no"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("could not save") from exc
    except RuntimeError as wrapped:
        assert disk_full(wrapped)


def _run(directory: Path, **options: object) -> Run:
    return Run(run_id="20261202-160000-abcdef0-123456", directory=directory, options=dict(options), cells=[])


def test_the_resume_command_names_a_results_folder_of_its_own_and_the_dsn(tmp_path: Path) -> None:
    from harness.measure.apps import ROOT

    assert resume_command(_run(ROOT / "results" / "x")) == "nox -s bench -- --resume 20261202-160000-abcdef0-123456"
    elsewhere = resume_command(_run(tmp_path / "my results" / "x", dsn="postgresql://u:***@h/db"))
    assert elsewhere == (f"nox -s bench -- --resume 20261202-160000-abcdef0-123456 --results '{tmp_path}/my results' "
                         "(with the same BENCH_DSN)")


def test_a_full_disk_while_saving_stops_the_run_saying_what_is_kept_and_how_to_resume(tmp_path: Path) -> None:
    run = _run(tmp_path / "results" / "r")
    run.save()
    with pytest.raises(RunStopped) as stopped, writing(run):
        raise OSError(errno.ENOSPC, "No space left on device")
    said = str(stopped.value)
    assert said.startswith(f"results disk full at {tmp_path / 'results'} (") and " KiB free): " in said
    assert said.endswith(f"0 finished samples kept in {run.path}; free space there and resume with: "
                         f"nox -s bench -- --resume {run.run_id} --results {tmp_path / 'results'}")
    with pytest.raises(RunStopped, match="free space there and render it with: nox -s report -- "), \
            writing(run, rendering=True):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(RunStopped, match=": nothing kept; free space there and start the run again$"), \
            writing(_run(tmp_path / "results" / "never-saved")):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError), writing(run):  # any other error is not a full disk
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_dsm_control_segment_lists_the_files_in_use() -> None:
    items = [(3178899562, 4), (424825558, 0), (2322552188, 2)]
    control = struct.pack("=III4x", DSM_MAGIC, len(items), 64) + b"".join(
        struct.pack("=II16x8x?7x", handle, refcnt, False) for handle, refcnt in items)
    assert dsm_segments(control, 15) == ["PostgreSQL.3178899562", "PostgreSQL.2322552188"]
    assert dsm_segments(b"\0" * 64, 15) == []  # not a control segment
    assert dsm_segments(control[:40], 15) == []  # cut short


def test_a_process_group_runs_while_a_member_does_that_is_not_a_zombie(tmp_path: Path) -> None:
    for pid, state, group in ((10, "S", 10), (11, "Z", 20), (12, "R", 30)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (python3 (x)) {state} 1 {group} {group} 0 -1\n")
    assert group_running(10, tmp_path) and group_running(30, tmp_path)
    assert not group_running(20, tmp_path) and not group_running(40, tmp_path)


def test_a_dead_server_says_how_and_when_it_died_with_its_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    log.write_text("starting\nallocating a lot\n")
    killed = SimpleNamespace(returncode=-9)  # a Popen once it has collected the status of a SIGKILLed child
    server = Server(proc=killed, port=0, log=log, ended=lambda: 101.25)
    assert server.death("measured window", 100.0) == (
        "server was killed by signal 9 (SIGKILL: out of memory? dmesg names what the kernel's OOM killer killed) "
        "after 1.2 s of the measured window; its last lines: starting\nallocating a lot")
    assert Server(proc=SimpleNamespace(returncode=1), port=0, log=tmp_path / "none").death("startup") == (
        "server exited with status 1 during the startup")


def test_an_embedded_database_is_lost_once_its_postmaster_has_ended() -> None:
    postmaster = SimpleNamespace(pid=4242, poll=lambda: None)
    db = Database(dsn="postgresql://u@127.0.0.1:1/db", embedded=True, postmaster_pid=4242, process=postmaster)
    assert db.lost(probe=False) is None and db.lost() is None  # the postmaster's life is the answer: no connection
    postmaster.poll = lambda: -9
    assert db.lost() == ("PostgreSQL (pid 4242) was killed by signal 9 (SIGKILL: out of memory? dmesg names what "
                         "the kernel's OOM killer killed)")


def test_run_json_is_left_whole_when_its_rewrite_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(tmp_path / "r")
    run.save()
    before = run.path.read_text()
    real = Path.write_text

    def half_then_full(self: Path, text: str, *args: object, **kw: object) -> int:
        real(self, text[: len(text) // 2], *args, **kw)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    run.options["more"] = "x" * 1000
    with pytest.raises(OSError):
        run.save()
    monkeypatch.undo()
    assert run.path.read_text() == before and json.loads(before)["run_id"] == run.run_id
    assert sorted(p.name for p in run.directory.iterdir()) == ["run.json"]
