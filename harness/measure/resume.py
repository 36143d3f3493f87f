"""What a run that stopped keeps, and how it goes on: the command that resumes it, and a full results disk.

A run stops on Ctrl-C and on the faults no later sample can get past (``harness.errors.RunStopped``); every sample
measured is already in run.json, rewritten whole after each one, so ``--resume RUN_ID`` starts from there. A write
to the run's folder that finds the disk full (ENOSPC, or a quota: EDQUOT) stops the run the same way.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
from collections.abc import Callable, Iterator

from harness.errors import RunStopped, disk_full
from harness.measure.apps import ROOT
from harness.measure.postgres import Database
from harness.model import Run, Sample


def _results_option(run: Run) -> str:
    """`` --results DIR`` for a run outside the repository's results/, which commands look in by default."""
    results = run.directory.parent
    return "" if results.resolve() == (ROOT / "results").resolve() else f" --results {shlex.quote(str(results))}"


def resume_command(run: Run) -> str:
    """What finishes ``run``: ``nox -s bench -- --resume RUN_ID``, with its --results and a word on its DSN."""
    return (f"nox -s bench -- --resume {run.run_id}{_results_option(run)}"
            + (" (with the same BENCH_DSN)" if run.options.get("dsn") else ""))


def kept(run: Run) -> str:
    """How many samples run.json holds (what a resumption starts from), and where."""
    try:
        count = len(Run.load(run.directory).samples)
    except (OSError, ValueError):
        count = 0
    return f"{count} finished sample{'' if count == 1 else 's'} kept in {run.path}"


def stop_if_gone(run: Run, lost: str | None, where: str) -> None:
    """The database gone (``lost`` says how) stops the run: no later sample could be measured."""
    if lost:
        raise RunStopped(f"{lost} during {where}; {kept(run)}; resume with: {resume_command(run)}") from None


def watched(run: Run, database: Database, where: str, take: Callable[[], Sample]) -> Sample:
    """``take()``'s sample, the database checked before it (cheaply) and after it failed: a database gone stops the
    run, and the sample it spoiled is not kept, for a resumption to measure again."""
    stop_if_gone(run, database.lost(probe=False), where)
    try:
        sample = take()
    except Exception:
        stop_if_gone(run, database.lost(), where)
        raise
    if not sample.ok:
        stop_if_gone(run, database.lost(), where)
    return sample


@contextlib.contextmanager
def writing(run: Run, rendering: bool = False) -> Iterator[None]:
    """A write to the run's folder that finds the disk full stops the run, saying what is kept and how to go on."""
    try:
        yield
    except OSError as exc:
        if not disk_full(exc):
            raise
        results = run.directory.parent
        try:
            where = f"results disk full at {results} ({shutil.disk_usage(results).free // 1024} KiB free)"
        except OSError:
            where = f"results disk full at {results}"
        if rendering:
            then = f"free space there and render it with: nox -s report -- {run.run_id}{_results_option(run)}"
        elif run.path.is_file():
            then = f"{kept(run)}; free space there and resume with: {resume_command(run)}"
        else:
            then = "nothing kept; free space there and start the run again"
        raise RunStopped(f"{where}: {then}") from None
