"""harness.measure.metadata: what a run records about the interpreter it measured with."""

from __future__ import annotations

from pathlib import Path

from harness.measure.metadata import python_build, python_summary, unoptimized

SHARED_MAPS = "7f11 r-xp 00000000 08:01 123 /root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0\n"
STATIC_MAPS = "55d0 r-xp 00000000 08:01 456 /usr/bin/python3.11\n7f27 r-xp 00000000 08:01 789 /usr/lib/libc.so.6\n"


def test_libpython_is_read_off_the_memory_maps():
    assert python_build(SHARED_MAPS)["libpython"] == "shared"
    assert python_build(STATIC_MAPS)["libpython"] == "static"


def test_this_interpreter_is_described():
    build = python_build()
    assert build["executable"].startswith("/") and "python" in build["executable"]
    assert build["configure_pgo"] == ("--enable-optimizations" in build["configure"])
    assert build["libpython"] in ("shared", "static")
    # the process that runs the tests maps libpython iff this interpreter was built --enable-shared
    maps = Path("/proc/self/maps").read_text()
    assert (build["libpython"] == "shared") == ("libpython" in maps)


def test_summary_and_the_unoptimized_pattern():
    pyenv = {"executable": "/root/.pyenv/versions/3.11.7/bin/python3.11", "configure_pgo": False,
             "configure_lto": False, "libpython": "shared"}
    debian = pyenv | {"executable": "/usr/bin/python3.11", "libpython": "static"}
    docker = pyenv | {"configure_pgo": True, "configure_lto": True}
    assert python_summary(pyenv) == ("`/root/.pyenv/versions/3.11.7/bin/python3.11` "
                                     "(configure: no --enable-optimizations, no --with-lto; libpython shared)")
    assert python_summary(None) is None
    assert unoptimized(pyenv)
    assert not unoptimized(debian)  # Debian builds PGO + LTO without saying so in its flags
    assert not unoptimized(docker)
