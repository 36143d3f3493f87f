"""Whose code a sample ran: stack frames to packages, a profiled window's samples to shares of user CPU.

py-spy (``harness.measure.profile``) writes folded stacks, native frames included; each sample goes to the
package that owns its innermost frame:

- a distribution, for files under site-packages (named by ``importlib.metadata``: ``sqlalchemy``,
  ``pydantic_core``, ``granian``…);
- ``asyncio`` (its Python files and its C accelerator), ``stdlib`` for the rest of the standard library;
- ``python`` for the interpreter's own native frames that py-spy shows (libpython, the python binary: the
  garbage collector, locks, ``re``'s engine). The rest of the interpreter's work is charged to what it
  works for: the bytecode loop to the Python function it runs, a C-API call to the extension making it
  (py-spy folds those frames away);
- ``app`` for the files under ``apps/``; ``native`` for other native code (libc, the loader).

A native frame that py-spy names by the source file of its debug information (``/project/uvloop/loop.c``
is where uvloop's wheel was built) is traced back to the library it was compiled into, through the debug
strings of the libraries the server has mapped; a frame that cannot be placed (a ``Py_DECREF`` inlined
from a header every extension includes) goes to its caller's owner.

A sample caught in a system call shows libc's wrapper as its innermost frame (``write``, ``epoll_pwait``:
named after a system call in the kernel's symbol table). That is kernel time, which the window's system
CPU counts exactly, so it is left out; counted as user time it would make libc 20% of ``asgi/uvicorn/none``
where ``perf`` finds 4%. Samples count a thread whenever it is runnable, and the server's threads share
one core, so the other samples are turned into CPU thread by thread: each thread's samples share out that
thread's user CPU over the window. A thread py-spy never samples is not a Python thread (granian's Rust
runtime, ``tokio-rt-worker``, does its HTTP I/O there): its user CPU goes whole to the package that
started the process (``-m granian``).

When py-spy dropped native samples in greenlets, the split between Python packages comes from the
Python-only recording of the same window, and the native samples only divide each Python package's part
further (``refine``).

Inclusively, a sample counts once for every package with a frame on its stack (``cpu_by_package``): the
user CPU under SQLAlchemy is that of the samples with a SQLAlchemy frame, whatever they were running
innermost (asyncpg, the kernel), and the system CPU under it is split as the thread's samples in system calls
are. So a package's inclusive share is at least its innermost one. A thread py-spy never samples runs under
its owner. The packages on a stack come from the native recording, whose stacks reach the thread's top
level (the Python-only one's coroutine stacks often stop short of it): with the Python-only recording, a
sample takes those of the native samples of its innermost Python package. A greenlet's native stack starts
at the greenlet and continues the stacks that spawned it (``graft``). Ownership is read from this
interpreter's installed packages and the server's mapped binaries, which is why this lives with the measuring.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import posixpath
import re
import site
import struct
import sys
import sysconfig
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import NamedTuple

import psutil

from harness.analysis.profile import (
    KERNEL,
    NATIVE,
    OTHER,
    CpuSplit,
    Owners,
    PackageCpu,
    Sampled,
    distribution_name,
    graft,
    refine,
)
from harness.measure.apps import APPS_DIR

PYTHON, STDLIB, ASYNCIO, APP = "python", "stdlib", "asyncio", "app"


@dataclass(frozen=True)
class ThreadCpu:
    """One thread of the server tree: its CPU over the window, and who owns it if py-spy cannot see it."""

    pid: int
    tid: int
    name: str
    user: float
    system: float
    owner: str = NATIVE


# ---------------------------------------------------------------------------- stacks and packages


def parse_folded(text: str) -> Counter[str]:
    """py-spy's ``--format raw`` (folded stacks): "frame;frame;…;innermost count" per line."""
    stacks = Counter[str]()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


PROCESS = re.compile(r'process (\d+):"(.*)"$')
THREAD = re.compile(r"thread \((\d+|0x[0-9A-Fa-f]+)\)(?:: (.*))?$")


class Stack(NamedTuple):
    """One folded stack taken apart: the sampled process and thread, and its code frames, root first."""

    pid: int | None
    command: str
    tid: int | None
    thread: str
    frames: list[str]


def split_stack(stack: str) -> Stack:
    pid, command, tid, thread, frames = None, "", None, "", stack.split(";")
    while frames and (process := PROCESS.match(frames[0])):  # parents first; the last is the sampled one
        pid, command, frames = int(process.group(1)), process.group(2), frames[1:]
    if frames and (match := THREAD.match(frames[0])):
        tid, thread, frames = int(match.group(1), 0), match.group(2) or "", frames[1:]
    return Stack(pid, command, tid, thread, frames)


def split_frame(frame: str) -> tuple[str, str, int]:
    """(function, file, line) of one frame as py-spy writes it: ``name (file:line)``."""
    if not frame.endswith(")") or " (" not in frame:
        return frame, "", 0
    name, _, where = frame[:-1].rpartition(" (")
    file, _, line = where.rpartition(":")
    return (name, file, int(line)) if line.isdigit() and file else (name, where, 0)


def _under(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def _is_elf(path: str) -> bool:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"
    return False


@dataclass
class Packages:
    """Who owns a file: the app, a distribution, asyncio, the standard library, the interpreter or native code."""

    apps: str
    site_dirs: tuple[str, ...]
    top_level: Mapping[str, list[str]]  # importable top-level name -> distributions providing it
    stdlib: tuple[str, ...]
    interpreter: tuple[str, ...]  # the python binary and libpython
    sources: NativeSources | None = None
    _seen: dict[str, str | None] = field(default_factory=dict, repr=False)

    @classmethod
    def current(cls, binaries: Iterable[str] = ()) -> Packages:
        """The packages of this interpreter, whose servers run from it; ``binaries`` place native sources."""
        sites = [*site.getsitepackages(), site.getusersitepackages(),
                 *(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))]
        paths = sysconfig.get_paths()
        libpython = Path(sysconfig.get_config_var("LIBDIR") or "/", sysconfig.get_config_var("INSTSONAME") or "-")
        return cls(apps=str(APPS_DIR), site_dirs=_both(sites), top_level=_top_level(),
                   stdlib=_both([paths["stdlib"], paths["platstdlib"]]),
                   interpreter=_both([sys.executable, str(libpython)]), sources=NativeSources(binaries))

    def of_file(self, path: str) -> str | None:
        """The package owning ``path``, or None when it cannot be told (a native source shared by many)."""
        if path not in self._seen:
            self._seen[path] = self._owner(path)
        return self._seen[path]

    def distribution(self, module: str) -> str:
        """The distribution providing the importable top-level ``module`` (its own name if none or several)."""
        dists = self.top_level.get(module, [])
        return distribution_name(dists[0] if len(set(dists)) == 1 else module)

    def innermost(self, frames: list[str]) -> str:
        """The owner of the innermost frame that can be placed (frames root first)."""
        for frame in reversed(frames):
            owner = self.of_file(split_frame(frame)[1])
            if owner is not None:
                return owner
        return NATIVE

    def _owner(self, path: str) -> str | None:
        if path.startswith("<frozen "):
            return STDLIB
        if not path.startswith("/"):
            return None  # "?" or no file: look at the caller
        path = posixpath.normpath(path)
        if _under(path, self.apps):
            return APP
        for folder in self.site_dirs:
            if _under(path, folder):
                return self.distribution(path[len(folder):].lstrip("/").split("/")[0].split(".")[0])
        for folder in self.stdlib:
            if _under(path, folder):
                first = path[len(folder):].lstrip("/").split("/")
                module = first[-1] if first[0] == "lib-dynload" else first[0]
                return ASYNCIO if module.split(".")[0] in ("asyncio", "_asyncio") else STDLIB
        if path in self.interpreter or posixpath.basename(path).startswith("libpython"):
            return PYTHON
        if posixpath.basename(path).endswith(".py"):
            return OTHER
        if re.search(r"\.so(\.\d+)*$", path) or _is_elf(path):  # a shared library, or an executable
            return NATIVE
        binary = self.sources.binary_of(path) if self.sources else None
        return None if binary is None else self.of_file(binary)


def _both(paths: Iterable[str]) -> tuple[str, ...]:
    """Each path as given and resolved (a virtualenv's python is a link; frames may name either)."""
    found = []
    for path in paths:
        found += [posixpath.normpath(path), os.path.realpath(path)]
    return tuple(dict.fromkeys(found))


@cache
def _top_level() -> dict[str, list[str]]:
    return {name: list(dists) for name, dists in packages_distributions().items()}


def process_owner(pid: int, packages: Packages | None = None) -> str:
    """The package a process was started as (``python -m granian`` -> granian): owner of its unseen threads."""
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return NATIVE
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else Path(argv[1] if len(argv) > 1 else argv[0]).stem
    top = module.split(".")[0]
    packages = packages or Packages.current()
    return packages.distribution(top) if top in packages.top_level else NATIVE


# ---------------------------------------------------------------------------- native sources


_SHF_COMPRESSED = 0x800
_DEBUG_STRINGS = (b".debug_str", b".debug_line_str", b".debug_line")


def debug_strings(path: str) -> set[str]:
    """The file and directory names in an ELF's (uncompressed) debug sections; empty if it has none."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:6] != b"\x7fELF\x02\x01":  # 64-bit little-endian only
                return set()
            shoff, = struct.unpack_from("<Q", data, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
            headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
            names = headers[shstrndx][4]
            found: set[str] = set()
            for name, _, flags, _, offset, size in headers:
                label = data[names + name: data.find(b"\0", names + name)]
                if label in _DEBUG_STRINGS and not flags & _SHF_COMPRESSED:
                    found.update(s.decode() for s in data[offset: offset + size].split(b"\0")
                                 if 2 < len(s) < 4096 and s.isascii() and b"." in s)
            return {posixpath.normpath(s) for s in found if s.isprintable()}
    except (OSError, ValueError, struct.error, IndexError):
        return set()


class NativeSources:
    """Which binary a native source file was compiled into, from the binaries' debug strings.

    A frame's file is its compile-time path (``/project/uvloop/loop.c``); the binary's debug strings hold
    its directory and name in pieces (``/project``, ``uvloop/loop.c``). The binary holding the longest
    trailing part of the path is the one, if no other holds as long a part; else it cannot be told.
    """

    def __init__(self, binaries: Iterable[str]) -> None:
        self.binaries = [b for b in sorted(set(binaries)) if _is_elf(b)]
        self._index: dict[str, set[str]] | None = None

    def binary_of(self, path: str) -> str | None:
        parts = posixpath.normpath(path).lstrip("/").split("/")
        index = self._strings()
        for k in range(len(parts)):
            holders = index.get("/".join(parts[k:]))
            if holders:
                return next(iter(holders)) if len(holders) == 1 else None
        return None

    def _strings(self) -> dict[str, set[str]]:
        if self._index is None:
            self._index = {}
            for binary in self.binaries:
                for string in debug_strings(binary):
                    self._index.setdefault(string.lstrip("/"), set()).add(binary)
        return self._index


# ---------------------------------------------------------------------------- shares


def thread_samples(stacks: Mapping[str, int]) -> Iterable[tuple[int | None, tuple[list[str], int]]]:
    """(thread id, (code frames, samples)) for every folded stack."""
    for stack, count in stacks.items():
        parts = split_stack(stack)
        yield parts.tid, (parts.frames, count)


@cache
def system_calls() -> frozenset[str]:
    """The kernel's system call names, from its symbol table (``__x64_sys_write`` -> ``write``)."""
    names = {"syscall"}  # glibc's generic wrapper
    with contextlib.suppress(OSError), open("/proc/kallsyms") as symbols:
        names.update(m.group(1) for line in symbols if (m := re.search(r"(?:^|_)sys_(\w+)$", line.split()[-1])))
    return frozenset(names)


def in_system_call(frames: list[str], packages: Packages) -> bool:
    """Whether a sample was caught in a system call: its innermost frames are native code (libc, the vDSO),
    one of them named after a system call (``write``, ``__libc_recv``, ``epoll_pwait``, ``syscall``)."""
    for frame in reversed(frames):
        function, file, _ = split_frame(frame)
        owner = packages.of_file(file)
        if owner == NATIVE and re.sub(r"^(?:__GI_)?_*(?:libc_)?", "", function) in system_calls():
            return True
        if owner not in (NATIVE, None):
            return False
    return False


def is_python_frame(file: str) -> bool:
    """Whether a frame's file is Python source (py-spy names C, Cython and Rust code by a binary or a .c file)."""
    return file.endswith(".py") or file.startswith("<frozen ")


def python_owner(frames: list[str], packages: Packages) -> str | None:
    """The package of the innermost Python frame (None if there is none)."""
    for frame in reversed(frames):
        file = split_frame(frame)[1]
        if is_python_frame(file):
            return packages.of_file(file)
    return None


TOP_LEVEL = ("_run_module_as_main", "<module>", "_bootstrap")  # a thread's first Python frame: runpy's, threading's
SPAWN = "greenlet_spawn"  # SQLAlchemy's asyncio layer: runs a function in a greenlet (a stack py-spy sees apart)


def sampled(frames: list[str], packages: Packages) -> Sampled:
    """One stack's owner and packages; whether it holds a thread's top-level frame, and if it runs
    ``greenlet_spawn``, the packages from the root down to that frame (what a greenlet's stack continues)."""
    owner = KERNEL if in_system_call(frames, packages) else packages.innermost(frames)
    found, spawner, rooted = set(), None, False
    for frame in frames:
        function, file, _ = split_frame(frame)
        name = function.rpartition(".")[2]
        if (package := packages.of_file(file)) is not None:
            found.add(package)
        rooted = rooted or name in TOP_LEVEL
        if spawner is None and name == SPAWN:
            spawner = frozenset(found)
    return Sampled(python_owner(frames, packages), owner, frozenset(found), rooted, spawner)


def owners_by_thread(stacks: Mapping[str, int], packages: Packages) -> dict[int | None, Owners]:
    """Per thread id, each sample's owner (``kernel`` if caught in a system call) and packages on its stack."""
    by_thread: dict[int | None, Owners] = {}
    for tid, (frames, count) in thread_samples(stacks):
        by_thread.setdefault(tid, Counter())[sampled(frames, packages)] += count
    return by_thread


def attribute(stacks: Mapping[str, int], packages: Packages | None = None, threads: Iterable[ThreadCpu] | None = None,
              python_stacks: Mapping[str, int] | None = None) -> dict[str, float]:
    """Package -> share of user CPU by innermost frame (the shares sum to 1): ``cpu_by_package``'s first part."""
    return cpu_by_package(stacks, packages, threads, python_stacks).innermost


def cpu_by_package(stacks: Mapping[str, int], packages: Packages | None = None,
                   threads: Iterable[ThreadCpu] | None = None,
                   python_stacks: Mapping[str, int] | None = None) -> PackageCpu:
    """A window's CPU by package, from folded stacks: innermost, and inclusively.

    A sample caught in a system call is kernel time, which the system CPU counts: it is left out of the user
    CPU, and shares out the thread's system CPU among the packages on its stack. With ``python_stacks`` (the
    same window, Python frames only), a thread's split between Python packages comes from those, and the
    native samples only divide each package's part further, so native samples py-spy had to drop cannot bias
    it. Without ``threads`` every sample weighs the same; with them (the window's CPU of every thread), each
    thread's samples split that thread's user and system CPU, and a thread without samples gives both to its
    owner.
    """
    packages = packages or Packages.current()
    native = owners_by_thread(stacks, packages)
    python = owners_by_thread(python_stacks, packages) if python_stacks is not None else {}
    held = {tid: refine(python.get(tid, Counter()), graft(native.get(tid, Counter()))) for tid in {*native, *python}}
    split = CpuSplit()
    if threads is None or None in held:  # no thread ids: py-spy ran without --threads
        pooled = sum(held.values(), Counter())
        kernel = sum(n for (owner, _), n in pooled.items() if owner == KERNEL)
        split.add(pooled, sum(pooled.values()) - kernel, kernel)
    else:
        for thread in threads:
            if held.get(thread.tid):
                split.add(held[thread.tid], thread.user, thread.system)
            else:
                split.unsampled(thread.owner, thread.user, thread.system)
    return split.shares()
