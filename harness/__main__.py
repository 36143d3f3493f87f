"""``python -m harness``: run the matrix, re-render a report, or keep a PostgreSQL up for development.

    python -m harness run [options]     measure every cell (the main job; `nox -s bench`)
    python -m harness report [RUN_ID]   re-render results/<run-id>/ from its run.json (`nox -s report`)
    python -m harness compare A B       compare two runs cell by cell, with a verdict (`nox -s compare`)
    python -m harness postgres          start an embedded PostgreSQL and keep it up until Ctrl-C
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from pathlib import Path

from harness.errors import UsageError
from harness.measure.load import RATE_MAX, SECONDS_MAX
from harness.measure.postgres import PostgresError, embedded, passwords
from harness.measure.process import write_private

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


def _interrupt_once() -> None:
    """Ctrl-C and SIGTERM stop everything and keep what was measured; once stopping, further ones wait for it.

    The first SIGINT or SIGTERM raises KeyboardInterrupt, so servers, load and PostgreSQL are stopped and their
    directories removed on the way out. Any later one (a second Ctrl-C, a terminal's SIGTERM) is only noted:
    cutting that cleanup short would leave processes and directories behind. The handlers are installed even
    when SIGINT was inherited as ignored (a shell starts background jobs so, and nox runs the harness so).
    """

    def stopping(signum: int, frame: object) -> None:
        os.write(2, b"insertbench: already stopping; removing servers, PostgreSQL and temporary files\n")

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, stopping)
        signal.signal(signal.SIGTERM, stopping)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def _dsn(text: str) -> str:
    """--dsn's value: one typed on the command line (not $BENCH_DSN) that holds a password gets a warning."""
    if text != os.environ.get("BENCH_DSN") and passwords(text):
        print("insertbench: warning: a password in --dsn is visible in ps for the whole run; set BENCH_DSN in "
              "the environment instead", file=sys.stderr)
    return text


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _counts(text: str) -> list[int]:
    try:
        counts = [int(n) for n in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--inserts takes whole numbers like 1,10, got {text!r}") from None
    if not counts or any(n < 1 or n > 100 for n in counts):
        raise argparse.ArgumentTypeError(f"--inserts takes numbers from 1 to 100, got {text!r}")
    return counts


def _number(kind: type, minimum: float = 0.0, inclusive: bool = False, maximum: float = SECONDS_MAX):
    """A finite number above ``minimum`` (or equal to it, when ``inclusive``) and at most ``maximum``: NaN and
    infinity are refused, and so is a value the load generator cannot take (seconds beyond ``SECONDS_MAX``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = f"{minimum:g} or more" if inclusive else f"above {minimum:g}"
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected at most {maximum:g}, got {text!r}")
        return value

    return parse


def _positive(kind: type):
    return _number(kind)


def _run_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="measure the matrix (the main job)")
    run.add_argument("--frameworks", type=_names, help="comma-separated apps (default: every folder in apps/)")
    run.add_argument("--servers", type=_names, help="comma-separated servers (default: all)")
    run.add_argument("--db", type=_names, help="comma-separated database layers (default: all that apply)")
    run.add_argument("--inserts", type=_counts, help="inserts per request, e.g. 1,10 (default 1)")
    run.add_argument("--shapes", type=_names, help="how N>1 rows are written: bulk (one statement), each (one "
                                                   "statement per row, one transaction); default both; get adds the "
                                                   "GET form (text in the query, no body) of apps that have one")
    run.add_argument("--python", type=_names, metavar="VERSIONS",
                     help="serve every chosen cell under each interpreter: versions (3.12) or paths, the first the "
                          "baseline (default: this one; the default run adds the original app and the cheapest "
                          "cell under every other CPython >= 3.11 found)")
    run.add_argument("--knobs", type=_names, help="comma-separated changes a user can copy (pool4: a pool of 4), each "
                     "measured beside every chosen cell it applies to (default: none)")
    run.add_argument("--repeats", type=_positive(int), help="samples per cell, interleaved (default 3)")
    run.add_argument("--duration", type=_positive(float), help="measured seconds per sample (default 2)")
    run.add_argument("--warmup", type=_number(float, inclusive=True),
                     help="warm-up seconds before each window (default 0.5)")
    run.add_argument("--concurrency", type=_positive(int), help="connections of the load generator (default 64)")
    run.add_argument("--workers", type=_positive(int), help="server worker processes (default 1)")
    run.add_argument("--rate", type=_number(float, maximum=RATE_MAX),
                     help="fixed request rate per second instead of a closed loop")
    run.add_argument("--ready-timeout", type=_positive(float), metavar="SECONDS",
                     help="how long a server may take to answer its readiness check before its sample fails "
                          "(default 30)")
    run.add_argument("--precision", type=_positive(float), metavar="PERCENT",
                     help="after --repeats, sample a cell again while its 95%% interval is wider than ±PERCENT "
                          "of its median (default 5)")
    run.add_argument("--budget", type=_number(float, inclusive=True), metavar="MINUTES",
                     help="wall time for CPU samples, the minimum repeats and the extra ones (default 11; "
                          "0: no extra samples)")
    run.add_argument("--instructions", action="store_true",
                     help="also count each cell's instructions per insert under valgrind's callgrind")
    run.add_argument("--instruction-requests", type=_positive(int), metavar="N",
                     help="requests in each callgrind window (default 1000; --quick 300)")
    run.add_argument("--instruction-concurrency", type=_positive(int), metavar="C",
                     help="connections during a callgrind window (default 4: few enough that the warm-up opens "
                          "every database connection the window uses)")
    run.add_argument("--profile", action="store_true",
                     help="also profile one window per cell with py-spy: CPU by package and a flame graph")
    run.add_argument("--soak", type=_positive(float), metavar="MINUTES",
                     help="serve each --cells cell from one server for MINUTES, measured in consecutive windows of "
                          "--duration seconds (default 5 here): memory growth per 100,000 requests and CPU drift; "
                          "alone unless matrix cells are chosen too (--frameworks, --db…)")
    run.add_argument("--cells", type=_names, metavar="CELLS", help="the cells --soak serves: "
                     "framework/server/db[+knob],…, e.g. seed/uvicorn/orm,seed/uvicorn/orm+gcfreeze")
    run.add_argument("--quick", action="store_true", help="a small, fast first look (1 repeat, short windows)")
    run.add_argument("--matrix", action="store_true", help="the whole matrix: every framework on every layer under "
                     "every server, besides the default run's cells (the default run measures the original app, "
                     "FastAPI and the bare app on every layer, every other framework on none and coalesced)")
    run.add_argument("--durable", action="store_true", help="keep PostgreSQL's durable defaults (fsync on)")
    run.add_argument("--dsn", type=_dsn, default=os.environ.get("BENCH_DSN"), metavar="URL",
                     help="use this PostgreSQL instead of an embedded one; better: set BENCH_DSN=postgresql://… in "
                          "the environment, which no command line shows")
    run.add_argument("--resume", metavar="RUN_ID", help="finish an interrupted run")
    run.add_argument("--results", type=Path, default=RESULTS_DIR, help="where runs are written (default results/)")
    run.add_argument("--apps", type=Path, default=None, help="the folder of apps (default apps/)")
    readme = run.add_mutually_exclusive_group()
    readme.add_argument("--no-readme", action="store_true", help="do not refresh the README's results section")
    readme.add_argument("--readme", action="store_true",
                        help="refresh the README's results section from this run even if it is not the full matrix")
    _own_app_options(run)


def _own_app_options(run: argparse.ArgumentParser) -> None:
    own = run.add_argument_group("measure your own app", "an ASGI app of yours beside the matrix (docs/own-app.md); "
                                 "with --app the matrix cells are those --frameworks and --db choose, by default "
                                 "fastapi/orm under each server")
    own.add_argument("--app", metavar="MODULE:ATTR", help="your ASGI application, e.g. myservice.main:app")
    own.add_argument("--app-dir", metavar="DIR", help="its working directory and import root (default: .)")
    own.add_argument("--request", metavar='"METHOD /path"', help='the measured request, e.g. "POST /orders?x=1"; '
                     "{n} anywhere in the path, body or headers becomes a number unique to each request")
    own.add_argument("--body", metavar="TEXT|@FILE", help="the request's body (Content-Type application/json "
                     "unless a --header sets one)")
    own.add_argument("--header", action="append", metavar='"Name: value"', help="a request header (repeatable)")
    own.add_argument("--env", action="append", metavar="NAME=VALUE", help="an environment variable for the app "
                     "(repeatable); {dsn} is the database's postgresql:// URL, {dsn_asyncpg} its "
                     "postgresql+asyncpg:// form")
    own.add_argument("--setup-sql", metavar="SQL|@FILE", help="SQL run once before the first sample (your tables)")
    own.add_argument("--app-python", metavar="PATH", help="serve with this interpreter (your virtualenv's "
                     "bin/python, with uvicorn/granian installed) instead of the harness's")
    own.add_argument("--requirements", metavar="FILE", help="pip-install your app's requirements into the "
                     "harness's environment first")
    own.add_argument("--health", metavar='"GET /path"', help="the readiness check (default: the measured request "
                     "answering 2xx)")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    report = sub.add_parser("report", help="re-render a run's matrix.md, matrix.csv and charts from run.json")
    report.add_argument("run_id", nargs="?", help="a folder name under results/ (default: the newest)")
    report.add_argument("--results", type=Path, default=RESULTS_DIR)
    readme = report.add_mutually_exclusive_group()
    readme.add_argument("--no-readme", action="store_true", help="do not refresh the README's results section")
    readme.add_argument("--readme", action="store_true", help="show this run in the README's results section "
                        "(by default the README shows the newest full run, so re-rendering another leaves it alone)")
    compare = sub.add_parser("compare", help="compare two runs cell by cell: ratio, interval and verdict")
    compare.add_argument("run_a", help="the baseline run (a folder name under results/)")
    compare.add_argument("run_b", help="the run compared with it")
    compare.add_argument("--results", type=Path, default=RESULTS_DIR)
    floor = sub.add_parser("floor", add_help=False, help="a raw uvloop HTTP server's CPU per request: the floor "
                           "under every ASGI server (python -m harness floor --help)")
    floor.add_argument("rest", nargs=argparse.REMAINDER)
    pg = sub.add_parser("postgres", help="start an embedded PostgreSQL and keep it up until Ctrl-C")
    pg.add_argument("--durable", action="store_true", help="keep PostgreSQL's durable defaults (fsync on)")
    return parser.parse_args(argv)


def postgres(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with embedded(durable=args.durable) as db:
        assert db.datadir is not None
        dsn_file = db.datadir.parent / "dsn"
        write_private(dsn_file, db.dsn + "\n")  # our own directory, not PostgreSQL's user's: no symlink of theirs
        print(f"PostgreSQL {db.version} up in {time.monotonic() - started:.2f}s at {db.redacted_dsn}")
        print(f"full DSN (with password) for your shell:  export BENCH_DSN=\"$(cat {dsn_file})\"")
        print("Ctrl-C stops it and removes its data.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping PostgreSQL", flush=True)
    return 0


def report(args: argparse.Namespace) -> int:
    from harness.analysis.summary import analyse
    from harness.measure.apps import discover
    from harness.measure.session import refresh_readme
    from harness.model import Run
    from harness.report.matrix import render
    from harness.report.readme import newest_run

    try:
        given = Path(args.run_id) if args.run_id else None
        if given is not None and not (given / "run.json").is_file():  # a run's id, or else its path
            given = args.results / args.run_id
        run_dir = given or newest_run(args.results)
        if not (run_dir / "run.json").is_file():
            raise UsageError(f"no run.json in {run_dir}; runs there: {', '.join(_run_ids(args.results))}")
        analysis = analyse(Run.load(run_dir))
        for path in render(analysis.run, analysis):
            print(f"wrote {path}")
        said = refresh_readme(analysis, discover(), asked=args.readme, refused=args.no_readme)
        if said:
            print(said)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return 0


def _run_ids(results: Path) -> list[str]:
    return sorted(p.parent.name for p in results.glob("*/run.json")) if results.is_dir() else ["(none yet)"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["floor"]:  # its own options, parsed by harness.measure.floor
        from harness.measure.floor import main as floor

        return floor(argv[1:])
    args = parse(argv)
    _interrupt_once()
    try:
        if args.command == "postgres":
            return postgres(args)
        if args.command == "report":
            return report(args)
        if args.command == "compare":
            from harness.report.compare import main as compare

            return compare(args.results, args.run_a, args.run_b)
        from harness.measure.session import run

        return run(args)
    except (PostgresError, UsageError) as exc:
        print(f"insertbench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("insertbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
