"""insertbench's sessions: `nox -s bench` measures, `nox -s tests` checks, `nox -s compare` compares two runs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_venv = "yes"

ROOT = Path(__file__).parent
# Two workers, each with a PostgreSQL of its own; an idle one takes pending tests from the other, whose order
# it keeps, so a module's servers mostly start once. `-- -n 0` runs in one process.
PARALLEL = ["-n", "2", "--dist", "worksteal"]


def install(session: nox.Session, *extras: str) -> None:
    """The harness, the shared servers and layers, and every app's own pinned requirements."""
    spec = f".[{','.join(extras)}]" if extras else "."
    requirements = sorted(ROOT.glob("apps/*/requirements.txt"))
    session.install("-e", spec, *(arg for req in requirements for arg in ("-r", str(req))))


def dsn_to_environment(session: nox.Session) -> tuple[list[str], dict[str, str]]:
    """The arguments without ``--dsn URL``, and that URL as BENCH_DSN: nox then neither echoes its password
    (before the run, and in its failure line) nor shows it on the harness's command line."""
    args, env, posargs = [], {}, iter(session.posargs)
    for arg in posargs:
        if arg == "--dsn" or arg.startswith("--dsn="):
            env["BENCH_DSN"] = arg.split("=", 1)[1] if "=" in arg else next(posargs, "")
        else:
            args.append(arg)
    if env:
        session.warn("--dsn: its password shows in ps as long as nox runs; set BENCH_DSN in the environment instead")
    return args, env


@contextlib.contextmanager
def interrupts_go_to_the_harness() -> Iterator[None]:
    """Ctrl-C reaches the harness (it shares the terminal's process group), which stops its servers and
    PostgreSQL, removes their directories and says how to resume; nox waits for that instead of killing
    it half a second later (its interrupt_timeout and terminate_timeout)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Measure server CPU per insert for every cell (options: nox -s bench -- --help)."""
    install(session)
    args, env = dsn_to_environment(session)
    with interrupts_go_to_the_harness():
        session.run("python", "-m", "harness", "run", *args, env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """Run every test, unit and system (a real embedded PostgreSQL, real servers), in two parallel workers."""
    install(session, "test")
    session.run("python", "-m", "pytest", *PARALLEL, *session.posargs)


@nox.session(default=False)
def unit(session: nox.Session) -> None:
    """Run the unit tests: no PostgreSQL, no server; seconds."""
    install(session, "test")
    session.run("python", "-m", "pytest", "tests/unit", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style with ruff."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".", *session.posargs)


@nox.session(default=False)
def compare(session: nox.Session) -> None:
    """Compare two runs cell by cell: B's median over A's, its interval and a verdict."""
    if len(session.posargs) != 2:
        session.error("Usage: nox -s compare -- RUN_A RUN_B  (folder names under results/)")
    install(session)
    session.run("python", "-m", "harness", "compare", *session.posargs)


@nox.session(default=False)
def floor(session: nox.Session) -> None:
    """A raw uvloop HTTP server's CPU per request under the matrix's load: the floor under every ASGI server."""
    install(session)
    session.run("python", "-m", "harness", "floor", *session.posargs)


@nox.session(default=False)
def report(session: nox.Session) -> None:
    """Re-render a run's matrix and charts from its run.json (default: the newest run; -- RUN_ID --readme)."""
    install(session)
    session.run("python", "-m", "harness", "report", *session.posargs)  # the harness's parser says what is wrong


@nox.session(python=False, default=False)
def docker(session: nox.Session) -> None:
    """Build the containers and measure one cell in them, PostgreSQL in its own (needs Docker and Compose)."""
    import csv
    import shutil

    results = Path(session.create_tmp()).resolve() / "docker-results"
    shutil.rmtree(results, ignore_errors=True)
    cell = ["--quick", "--frameworks", "asgi", "--servers", "uvicorn", "--db", "coalesced", "--no-readme"]
    session.run(str(ROOT / "docker" / "run.sh"), *cell, *session.posargs, env={"BENCH_RESULTS": str(results)},
                external=True)
    rows = [row for table in results.glob("*/matrix.csv") for row in csv.DictReader(table.open())]
    if not rows or any(row["verified"] != "true" for row in rows):
        session.error(f"the containers' run left no verified cell: see {results}")
    session.log(f"{len(rows)} cell(s) measured and verified in containers: {results}")
