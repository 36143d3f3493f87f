"""CPU by package: frames to packages, samples to shares, shares to µs per insert, the report's rendering;
this interpreter's own packages and wheels, read from their files.

The fixed stacks (tests/data/profile/stacks.txt) are what py-spy writes for a granian worker of the
fastapi app with the ORM layer, shortened, with made-up roots: /venv for site-packages, /py for the
interpreter, /repo for the repository, /project and /build for wheels' and CPython's build trees.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.analysis.profile import cell_inclusive, cell_profile, inclusive_share, inclusive_shares
from harness.analysis.stats import CellStats, Metrics
from harness.measure.apps import discover
from harness.measure.owners import (
    NativeSources,
    Packages,
    Sampled,
    ThreadCpu,
    attribute,
    cpu_by_package,
    debug_strings,
    graft,
    owners_by_thread,
    parse_folded,
    refine,
    split_frame,
    split_stack,
    system_calls,
)
from harness.measure.profile import Recording, speedscope
from harness.model import Cell
from harness.report.profile import (
    HEADER,
    INNERMOST_HEADER,
    named_packages,
    package_colours,
    profile_chart,
    profile_csv,
    profile_section,
    read_profile_csv,
    with_inclusive,
)

DATA = Path(__file__).parents[1] / "data" / "profile"
SITE = "/venv/lib/python3.11/site-packages"
DYNLOAD = "/py/lib/python3.11/lib-dynload"
SOURCES = {  # native source file -> the binary it was compiled into, as NativeSources finds it
    "/build/Python-3.11.7/Modules/_asynciomodule.c": f"{DYNLOAD}/_asyncio.cpython-311-x86_64-linux-gnu.so",
    "/project/uvloop/loop.c": f"{SITE}/uvloop/loop.cpython-311-x86_64-linux-gnu.so",
    "/project/build/libuv-x86_64/src/unix/linux.c": f"{SITE}/uvloop/loop.cpython-311-x86_64-linux-gnu.so",
}


class Sources:
    def binary_of(self, path: str) -> str | None:
        return SOURCES.get(path)


@pytest.fixture
def packages() -> Packages:
    dists = {"sqlalchemy": ["SQLAlchemy"], "greenlet": ["greenlet"], "asyncpg": ["asyncpg"], "fastapi": ["fastapi"],
             "pydantic_core": ["pydantic_core"], "granian": ["granian"], "uvloop": ["uvloop"],
             "typing_extensions": ["typing_extensions"], "opentelemetry": ["opentelemetry-api", "opentelemetry-sdk"]}
    return Packages(apps="/repo/apps", site_dirs=(SITE,), top_level=dists, stdlib=("/py/lib/python3.11",),
                    interpreter=("/py/bin/python3.11", "/py/lib/libpython3.11.so.1.0"), sources=Sources())


@pytest.fixture
def stacks():
    return parse_folded((DATA / "stacks.txt").read_text())


def needs_system_calls() -> None:
    if not {"write", "epoll_pwait"} <= system_calls():
        pytest.skip("the kernel's symbol table (/proc/kallsyms) is not readable here")


# ---------------------------------------------------------------------------- frames and packages


@pytest.mark.parametrize(("file", "package"), [
    (f"{SITE}/sqlalchemy/orm/session.py", "sqlalchemy"),  # a distribution, by its normalised name
    (f"{SITE}/asyncpg/protocol/protocol.cpython-311-x86_64-linux-gnu.so", "asyncpg"),
    (f"{SITE}/pydantic_core/_pydantic_core.cpython-311-x86_64-linux-gnu.so", "pydantic_core"),
    (f"{SITE}/granian/_granian.cpython-311-x86_64-linux-gnu.so", "granian"),
    (f"{SITE}/typing_extensions.py", "typing_extensions"),  # a single-module distribution
    (f"{SITE}/opentelemetry/context/__init__.py", "opentelemetry"),  # a namespace shared by distributions
    (f"{SITE}/unknown_thing/x.py", "unknown_thing"),
    ("/py/lib/python3.11/asyncio/tasks.py", "asyncio"),
    ("/py/lib/python3.11/lib-dynload/_asyncio.cpython-311-x86_64-linux-gnu.so", "asyncio"),
    ("/py/lib/python3.11/json/decoder.py", "stdlib"),
    ("/py/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so", "stdlib"),
    ("<frozen runpy>", "stdlib"),
    ("/py/lib/libpython3.11.so.1.0", "python"),
    ("/py/bin/python3.11", "python"),
    ("/usr/lib/x86_64-linux-gnu/libc.so.6", "native"),
    ("/repo/apps/fastapi/app.py", "app"),
    ("/repo/apps/_db/orm.py", "app"),
    ("/somewhere/else/script.py", "other"),
    ("/project/uvloop/loop.c", "uvloop"),  # a wheel's build path, placed by the binary's debug strings
    ("/build/Python-3.11.7/Modules/_asynciomodule.c", "asyncio"),
    ("/opt/_internal/cpython-3.11.16/include/python3.11/object.h", None),  # in every extension: the caller's
    ("?", None),
])  # fmt: skip
def test_a_file_belongs_to_its_package(packages: Packages, file: str, package: str | None) -> None:
    assert packages.of_file(file) == package


def test_a_frame_that_cannot_be_placed_goes_to_its_caller(packages: Packages) -> None:
    header = "Py_DECREF (/opt/_internal/cpython-3.11.16/include/python3.11/object.h:537)"
    assert packages.innermost(["run_forever (/project/uvloop/loop.c:33192)", header]) == "uvloop"
    assert packages.innermost([f"0x7f ({SITE}/granian/_granian.cpython-311-x86_64-linux-gnu.so)", "0x7e (?)"]) \
        == "granian"
    assert packages.innermost(["0x7e (?)"]) == "native"


def test_folded_stacks_come_apart_into_process_thread_and_frames() -> None:
    stack = ('process 10:"python -m granian app:app";process 11:"python -m granian app:app";'
             "thread (11): MainThread;serve (/venv/granian/server.py:120);write (/usr/lib/libc.so.6)")
    parts = split_stack(stack)
    assert (parts.pid, parts.command, parts.tid, parts.thread) == (11, "python -m granian app:app", 11, "MainThread")
    assert parts.frames == ["serve (/venv/granian/server.py:120)", "write (/usr/lib/libc.so.6)"]
    assert split_frame(parts.frames[0]) == ("serve", "/venv/granian/server.py", 120)
    assert split_frame("_run_code (<frozen runpy>:88)") == ("_run_code", "<frozen runpy>", 88)
    assert split_frame("0x7faa (/usr/lib/libc.so.6)") == ("0x7faa", "/usr/lib/libc.so.6", 0)
    assert split_frame("thread_run") == ("thread_run", "", 0)
    assert parse_folded("a;b 3\na;b 2\nbroken line\n\nc 1\n") == {"a;b": 5, "c": 1}


# ---------------------------------------------------------------------------- shares


def test_samples_in_system_calls_are_left_to_the_kernel(packages: Packages, stacks) -> None:
    needs_system_calls()
    shares = attribute(stacks, packages)
    assert sum(shares.values()) == pytest.approx(1)
    user_samples = sum(stacks.values()) - 10 - 5 - 30  # write, epoll_pwait and syscall are the kernel's
    assert shares["sqlalchemy"] == pytest.approx(40 / user_samples)
    assert shares["granian"] == pytest.approx((4 + 10) / user_samples)  # "?" goes to its caller
    assert shares["asyncio"] == pytest.approx((4 + 2 + 2) / user_samples)  # C Task, an inlined header, events.py
    assert shares["native"] == pytest.approx(2 / user_samples)  # malloc: libc's own work
    assert shares["uvloop"] == pytest.approx(3 / user_samples)
    assert {"greenlet", "asyncpg", "pydantic_core", "stdlib", "app", "python", "opentelemetry"} <= set(shares)
    assert "kernel" not in shares


def test_threads_weigh_their_samples_by_their_own_cpu(packages: Packages, stacks) -> None:
    needs_system_calls()
    threads = [ThreadCpu(10, 10, "python", 0.0, 0.01, "granian"),  # the granian parent: idle
               ThreadCpu(11, 11, "python", 0.89, 0.20, "granian"),  # the worker's event loop: 89 user samples
               ThreadCpu(11, 12, "python", 0.10, 0.30, "granian"),  # mostly in futex waits
               ThreadCpu(11, 13, "tokio-rt-worker", 0.50, 0.40, "granian")]  # never sampled: not a Python thread
    shares = attribute(stacks, packages, threads)
    user = 0.89 + 0.10 + 0.50
    assert sum(shares.values()) == pytest.approx(1)
    assert shares["sqlalchemy"] == pytest.approx(0.40 / user)
    assert shares["granian"] == pytest.approx((0.04 + 0.10 + 0.50) / user)


def by_owner(held: Counter) -> Counter:
    owners = Counter()
    for (owner, _), n in held.items():
        owners[owner] += n
    return owners


def test_the_python_only_recording_splits_python_packages_when_native_samples_were_dropped() -> None:
    def sampled(python: str, owner: str, *packages: str) -> Sampled:
        return Sampled(python, owner, frozenset({"stdlib", "uvicorn", python, *packages}))

    native = Counter({sampled("sqlalchemy", "sqlalchemy", "fastapi"): 6,
                      sampled("sqlalchemy", "greenlet", "fastapi", "greenlet"): 2,
                      sampled("sqlalchemy", "kernel", "fastapi", "native"): 2,
                      sampled("uvicorn", "uvloop", "uvloop"): 5,
                      sampled("uvicorn", "kernel", "uvloop", "native"): 5})  # most of SQLAlchemy's were dropped
    python = Counter({Sampled("sqlalchemy", "sqlalchemy", frozenset({"sqlalchemy"})): 30,  # a coroutine's stack,
                      Sampled("uvicorn", "uvicorn", frozenset({"uvicorn"})): 10,  # cut short
                      Sampled("app", "app", frozenset({"app", "uvicorn"})): 4})
    refined = refine(python, native)
    assert by_owner(refined) == {"sqlalchemy": 18, "greenlet": 6, "kernel": 11, "uvloop": 5, "app": 4}
    assert by_owner(refine(Counter(), native)) == {"sqlalchemy": 6, "greenlet": 2, "kernel": 7, "uvloop": 5}
    # each part has the packages of the native stacks it was divided by, which reach the thread's top level
    assert refined["greenlet", frozenset({"stdlib", "uvicorn", "sqlalchemy", "fastapi", "greenlet"})] == 6
    assert refined["kernel", frozenset({"stdlib", "uvicorn", "sqlalchemy", "fastapi", "native", "kernel"})] == 6
    assert refined["app", frozenset({"uvicorn", "app"})] == 4  # no native sample of app's: its own


# ---------------------------------------------------------------------------- inclusive shares


ROOT = ('process 1:"python -m uvicorn app:app";thread (1): MainThread;_run_module_as_main (<frozen runpy>:198);'
        f"run ({SITE}/uvicorn/server.py:68)")
EXECUTE = f"execute ({SITE}/sqlalchemy/orm/session.py:2308);_execute ({SITE}/sqlalchemy/engine/base.py:1416)"
ASYNCPG = f"bind_execute ({SITE}/asyncpg/protocol/protocol.cpython-311-x86_64-linux-gnu.so)"
UNDER_SQLALCHEMY = Counter({
    f"{ROOT};{EXECUTE};{ASYNCPG};__libc_write (/usr/lib/x86_64-linux-gnu/libc.so.6)": 2,  # a system call
    f"{ROOT};{EXECUTE};{ASYNCPG}": 3,
    f"{ROOT};{EXECUTE}": 1,
    f"{ROOT};serve ({SITE}/uvicorn/server.py:80)": 4,
})  # fmt: skip


def test_a_sample_counts_once_for_every_package_on_its_stack(packages: Packages) -> None:
    needs_system_calls()
    cpu = cpu_by_package(UNDER_SQLALCHEMY, packages)  # every sample weighs the same
    assert cpu.innermost == {"uvicorn": 0.5, "asyncpg": 3 / 8, "sqlalchemy": 1 / 8}  # unchanged: the 8 user samples
    assert cpu.innermost == attribute(UNDER_SQLALCHEMY, packages)
    assert cpu.inclusive == {"stdlib": 1.0, "uvicorn": 1.0, "sqlalchemy": 4 / 8, "asyncpg": 3 / 8}  # two frames: once
    # the system call under sqlalchemy, asyncpg, and libc's wrapper is the kernel's, counted for all of them once
    assert cpu.inclusive_system == {"asyncpg": 1.0, "native": 1.0, "sqlalchemy": 1.0, "stdlib": 1.0, "uvicorn": 1.0}
    user, system = 80.0, 20.0
    innermost = {package: share for package, share, _ in cell_profile(cpu.innermost, user, system)}
    under = inclusive_shares(cpu.inclusive, cpu.inclusive_system, user, system)
    assert under["sqlalchemy"] == pytest.approx((0.5 * 80 + 20) / 100)
    assert under["asyncpg"] == pytest.approx((3 / 8 * 80 + 20) / 100)
    assert under["kernel"] == innermost["kernel"] == 0.2
    assert under["uvicorn"] == 1.0
    assert all(under[package] >= share for package, share in innermost.items()), (under, innermost)


def test_inclusive_shares_weigh_samples_by_their_threads_cpu(packages: Packages) -> None:
    needs_system_calls()
    other = 'process 1:"python -m uvicorn app:app";thread (2): Thread-1;'
    stacks = UNDER_SQLALCHEMY + Counter({f"{other}run ({SITE}/uvicorn/server.py:68)": 10})
    threads = [ThreadCpu(1, 1, "python", 0.8, 0.2, "uvicorn"), ThreadCpu(1, 2, "Thread-1", 0.1, 0.05, "uvicorn"),
               ThreadCpu(1, 3, "tokio", 0.1, 0.05, "granian")]  # never sampled: all of it under its owner
    cpu = cpu_by_package(stacks, packages, threads)
    assert cpu.innermost["sqlalchemy"] == pytest.approx(0.8 / 8)
    assert cpu.inclusive["sqlalchemy"] == pytest.approx(0.8 * 4 / 8)
    assert cpu.inclusive["uvicorn"] == pytest.approx(0.9) and cpu.inclusive["granian"] == pytest.approx(0.1)
    assert cpu.inclusive_system["sqlalchemy"] == pytest.approx(0.2 / 0.3)  # thread 2 made no system call seen
    assert cpu.inclusive_system["granian"] == pytest.approx(0.05 / 0.3)
    assert all(cpu.inclusive[package] >= share for package, share in cpu.innermost.items())


def test_a_greenlets_samples_continue_the_stacks_that_spawned_it(packages: Packages) -> None:
    spawn = f"greenlet_spawn ({SITE}/sqlalchemy/util/_concurrency_py3k.py:190)"
    route = f"run_endpoint_function ({SITE}/fastapi/routing.py:212)"
    switch = f"g_switch ({SITE}/greenlet/_greenlet.cpython-311-x86_64-linux-gnu.so)"
    head = 'process 1:"python -m uvicorn app:app";thread (1): MainThread'
    stacks = Counter({f"{ROOT};{route};execute ({SITE}/sqlalchemy/ext/asyncio/session.py:461);{spawn}": 2,
                      f"{ROOT};health ({SITE}/uvicorn/server.py:99);{spawn}": 2,  # another caller of greenlet_spawn
                      f"{head};0x7f01 (?);{switch};{EXECUTE}": 4,  # in the greenlet: py-spy stops at its start
                      f"{head};0x7f02 ({SITE}/granian/_granian.cpython-311-x86_64-linux-gnu.so)": 2})  # no greenlet
    seen = owners_by_thread(stacks, packages)[1]
    assert sorted((s.rooted, s.spawner is not None, n) for s, n in seen.items()) == [
        (False, False, 2), (False, False, 4), (True, True, 2), (True, True, 2)]
    grafted = graft(seen)
    assert sum(grafted.values()) == sum(stacks.values())
    in_greenlet = {s.packages: n for s, n in grafted.items() if s.owner == "sqlalchemy" and "greenlet" in s.packages}
    assert in_greenlet == {frozenset({"stdlib", "uvicorn", "fastapi", "sqlalchemy", "greenlet"}): 2,
                           frozenset({"stdlib", "uvicorn", "sqlalchemy", "greenlet"}): 2}
    assert any(s.packages == frozenset({"granian"}) and not s.rooted for s in grafted)  # left as it was
    assert graft(Counter({s: n for s, n in seen.items() if s.spawner is None})) == {
        s: n for s, n in seen.items() if s.spawner is None}  # nothing spawned a greenlet: nothing to continue


def profiled_cell(extra: dict, *, user: float = 80.0, system: float = 20.0) -> CellStats:
    figures = {"server_cpu_us_per_insert": user + system, "user_us_per_insert": user, "system_us_per_insert": system}
    median = Metrics(**dict.fromkeys(Metrics.__dataclass_fields__) | figures)
    return CellStats(key=Cell("seed", "uvicorn", "orm"), status="ok", reason=None, verified=True, verify_errors=(),
                     repeats=3, errors=0, median=median, profile=extra)


def test_inclusive_share_of_a_cell_for_the_ladders_words() -> None:
    cell = profiled_cell({"profile_shares": {"sqlalchemy": 0.25, "fastapi": 0.75},
                          "profile_inclusive": {"sqlalchemy": 0.5, "fastapi": 1.0},
                          "profile_inclusive_system": {"sqlalchemy": 0.6}})
    assert inclusive_share(cell, "SQLAlchemy") == pytest.approx((0.5 * 80 + 0.6 * 20) / 100)
    assert inclusive_share(cell, "fastapi") == pytest.approx(0.8)
    assert inclusive_share(cell, "kernel") == pytest.approx(0.2)
    assert inclusive_share(cell, "django") == 0.0
    assert cell_inclusive(cell) == pytest.approx({"fastapi": 0.8, "sqlalchemy": 0.52, "kernel": 0.2})
    older = profiled_cell({"profile_shares": {"sqlalchemy": 1.0}})  # a run from before issue 19
    assert inclusive_share(older, "sqlalchemy") is None and cell_inclusive(older) is None
    assert inclusive_share(profiled_cell({"profile_error": "py-spy failed"}), "sqlalchemy") is None


def test_a_recording_uses_the_python_only_split_only_when_native_samples_were_dropped(packages: Packages) -> None:
    needs_system_calls()
    thread = 'process 1:"python -m uvicorn app:app";thread (1): MainThread;run (/venv/lib/python3.11/site-packages/'
    native = Counter({f"{thread}uvicorn/main.py:1);go (/repo/apps/asgi/app.py:9)": 10,
                      f"{thread}uvicorn/main.py:1);loop (/project/uvloop/loop.c:5)": 10})
    python = Counter({f"{thread}uvicorn/main.py:1);go (/repo/apps/asgi/app.py:9)": 30,
                      f"{thread}uvicorn/main.py:1)": 10})
    assert attribute(native, packages) == {"app": 0.5, "uvloop": 0.5}
    assert attribute(native, packages, python_stacks=python) == {"app": 0.75, "uvloop": 0.25}
    recording = Recording("asgi-uvicorn-none-1", native, [], python, errors=0)
    assert recording.dropped == 0 and Recording("x", native, [], python, errors=5).dropped == 0.2


def test_a_cell_profile_adds_up_to_its_cpu_per_insert() -> None:
    parts = cell_profile({"sqlalchemy": 0.5, "asyncpg": 0.2, "native": 0.3}, 800.0, 200.0)
    assert parts[0] == ("sqlalchemy", pytest.approx(0.4), pytest.approx(400.0))
    assert dict((p, us) for p, _, us in parts)["kernel"] == pytest.approx(200.0)
    assert sum(share for _, share, _ in parts) == pytest.approx(1)
    assert sum(us for _, _, us in parts) == pytest.approx(1000.0)
    assert [us for _, _, us in parts] == sorted((us for _, _, us in parts), reverse=True)
    assert sum(us for _, _, us in cell_profile({"a": 2, "b": 2}, 10.0, 0.0)) == pytest.approx(10.0)  # unnormalised
    assert cell_profile({}, 5.0, 5.0) == [("kernel", 0.5, 5.0), ("other", 0.5, 5.0)]


def test_the_flame_graph_is_a_speedscope_file_per_thread(stacks) -> None:
    python = Counter[str]()  # stands in for the Python-only recording
    for stack, n in stacks.items():
        python[stack.rsplit(";", 1)[0]] += n
    data = json.loads(json.dumps(speedscope(stacks, "fastapi-granian-orm-1", python)))
    frames = data["shared"]["frames"]
    assert data["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    assert [p["endValue"] for p in data["profiles"]] == [104, 40, 104, 40]  # busiest thread first, native first
    assert data["profiles"][2]["name"].startswith("Python frames only: MainThread 11 · pid 11 ")
    for profile in data["profiles"]:
        assert profile["type"] == "sampled" and len(profile["samples"]) == len(profile["weights"])
        assert all(0 <= i < len(frames) for sample in profile["samples"] for i in sample)
    assert {"name": "execute", "file": f"{SITE}/sqlalchemy/orm/session.py", "line": 2308} in frames


# ---------------------------------------------------------------------------- this machine


def test_native_sources_are_found_in_the_wheels_debug_strings() -> None:
    import httptools.parser.parser as parser
    import uvloop.loop as loop

    if "uvloop/loop.c" not in debug_strings(loop.__file__):
        pytest.skip("this uvloop wheel carries no debug information")
    sources = NativeSources([loop.__file__, parser.__file__, sys.executable])
    assert sources.binary_of("/project/uvloop/loop.c") == loop.__file__
    assert sources.binary_of("/project/vendor/llhttp/src/llhttp.c") == parser.__file__
    assert sources.binary_of("/nowhere/nothing.c") is None


def test_this_interpreter_packages_by_distribution() -> None:
    import asyncio.tasks
    import json.decoder

    import sqlalchemy.orm.session

    packages = Packages.current()
    assert packages.of_file(sqlalchemy.orm.session.__file__) == "sqlalchemy"
    assert packages.of_file(asyncio.tasks.__file__) == "asyncio"
    assert packages.of_file(json.decoder.__file__) == "stdlib"
    assert packages.of_file(str(discover()["asgi"].root / "apps" / "asgi" / "app.py")) == "app"
    assert packages.of_file(os.path.realpath(sys.executable)) == "python"


# ---------------------------------------------------------------------------- rendering


def rows_of(cells: dict[tuple[str, str, str], tuple[float, float, dict[str, float]]],
            inclusive: dict[tuple[str, str, str], dict[str, float]] | None = None) -> list[tuple]:
    """The report's rows, from each cell's user and system µs and shares (and inclusive shares, if given)."""
    rows = [(fw, server, db, 1, package, share, us) for (fw, server, db), (user, system, shares) in cells.items()
            for package, share, us in cell_profile(shares, user, system)]
    return with_inclusive(rows, {Cell(*key): under for key, under in (inclusive or {}).items()})


@pytest.fixture
def rows() -> list[tuple]:
    return rows_of({
        ("asgi", "uvicorn", "none"): (20.0, 15.5, {"uvicorn": 0.4, "httptools": 0.1, "uvloop": 0.1, "stdlib": 0.4}),
        ("fastapi", "uvicorn", "orm"): (740.0, 155.0, {"sqlalchemy": 0.6, "fastapi": 0.1, "greenlet": 0.1,
                                                       "asyncpg": 0.1, "python": 0.05, "native": 0.05}),
        ("seed", "uvicorn", "orm"): (800.0, 160.0, {"sqlalchemy": 0.55, "fastapi": 0.1, "starlette": 0.1,
                                                    "asyncpg": 0.1, "greenlet": 0.1, "app": 0.05}),
        ("asgi", "granian", "none"): (40.0, 13.3, {"granian": 0.6, "stdlib": 0.3, "tiny": 0.01, "app": 0.09}),
    }, {("seed", "uvicorn", "orm"): {"sqlalchemy": 0.62, "fastapi": 0.8, "starlette": 0.85, "asyncpg": 0.2,
                                     "greenlet": 0.4, "app": 0.7, "kernel": 160 / 960, "uvicorn": 1.0}})  # fmt: skip


def test_the_csv_reads_back(rows: list[tuple]) -> None:
    text = profile_csv(rows)
    assert text.splitlines()[0] == ",".join(HEADER)
    assert HEADER[-2:] == ("inclusive_share", "inclusive_us_per_insert")
    assert "seed,uvicorn,orm,1,sqlalchemy,0.458333,440.000,0.620000,595.200" in text
    assert "asgi,uvicorn,none,1,uvicorn,0.225352,8.000,," in text  # no inclusive shares for that cell
    back = read_profile_csv(text)
    assert [r[:5] for r in back] == [r[:5] for r in rows]
    assert [r[5:7] for r in back] == [pytest.approx(r[5:7], abs=1e-3) for r in rows]
    assert [r[7] for r in back] == [None if r[7] is None else pytest.approx(r[7], abs=1e-6) for r in rows]
    older = "\n".join([",".join(INNERMOST_HEADER), "seed,uvicorn,orm,1,sqlalchemy,0.5,400.0"])  # before issue 19
    assert read_profile_csv(older) == [("seed", "uvicorn", "orm", 1, "sqlalchemy", 0.5, 400.0, None, None)]
    with pytest.raises(ValueError, match="not a profile CSV"):
        read_profile_csv("a,b\n1,2\n")


def test_a_package_only_ever_on_the_stack_gets_a_row_of_its_own(rows: list[tuple]) -> None:
    seed = [r for r in rows if r[0] == "seed"]
    assert seed[-1] == ("seed", "uvicorn", "orm", 1, "uvicorn", 0.0, 0.0, 1.0, pytest.approx(960.0))
    assert sum(r[5] for r in seed) == pytest.approx(1) and sum(r[6] for r in seed) == pytest.approx(960.0)
    assert all(r[7] >= r[5] for r in seed)


def test_every_package_keeps_its_colour(rows: list[tuple]) -> None:
    colours = package_colours(["sqlalchemy", "kernel", "granian", "uvicorn", "other"])
    assert colours == package_colours(["granian", "sqlalchemy", "uvicorn", "kernel", "other"])
    assert len(set(package_colours([f"package{i}" for i in range(20)]).values())) == 20
    assert colours["kernel"] != colours["other"]


def test_small_packages_fold_into_other(rows: list[tuple]) -> None:
    from harness.report.profile import by_cell

    named = named_packages(by_cell(rows))
    assert "tiny" not in named and {"sqlalchemy", "kernel", "granian", "uvicorn"} <= set(named)
    assert named[:2] == ["kernel", "sqlalchemy"]  # by shares summed over the cells


def test_the_chart_is_the_same_png_every_time(rows: list[tuple], tmp_path: Path) -> None:
    first = profile_chart(rows, tmp_path / "a.png").read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert profile_chart(rows, tmp_path / "b.png").read_bytes() == first
    assert b"Software" not in first
    assert profile_chart([], tmp_path / "empty.png").is_file()


def test_the_section_links_the_chart_and_names_the_seeds_top_packages(rows: list[tuple]) -> None:
    text = profile_section(rows, "seed/uvicorn/orm")
    assert text.startswith("## Where the CPU goes\n") and "![CPU by package](profile.png)" in text
    sentence = next(line for line in text.splitlines() if line.startswith("The original app"))
    assert "`seed/uvicorn/orm`, 960 µs per insert" in sentence
    assert "sqlalchemy 440 µs (46%)" in sentence and "kernel 160 µs (17%)" in sentence
    assert sentence.count(" µs (") == 5
    assert "| asgi/granian/none | 53.3 | granian 24.0 · kernel 13.3 · stdlib 12.0 · app 3.6 · tiny 0.4 | — |" in text
    assert ("| seed/uvicorn/orm | 960 | sqlalchemy 440 · kernel 160 · asyncpg 80.0 · fastapi 80.0 · greenlet 80.0 | "
            "sqlalchemy 62% · kernel 17% · asyncpg 20% · fastapi 80% · greenlet 40% |") in text
    assert ("Counting everything their frames call, 62% under sqlalchemy, 20% under asyncpg, 80% under fastapi, "
            "40% under greenlet.") in sentence
    assert "The original app" not in profile_section([r for r in rows if r[0] != "seed"], "seed/uvicorn/orm")
    assert profile_section([], None) == ""

