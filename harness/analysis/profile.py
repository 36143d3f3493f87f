"""CPU by package, per insert: a profiled window's shares scaled to the cell's CPU per insert.

A profiled window (``harness.measure.profile``) records each package's share of the server's user CPU by
innermost frame (``profile_shares``), and, since issue 19, inclusively: the share of user CPU whose stacks
hold a frame of the package (``profile_inclusive``: its own code and everything it calls, each sample once per
package) and the share of system CPU spent in system calls made under it (``profile_inclusive_system``).
``cell_profile`` scales the innermost shares to the cell's user CPU per insert and adds its system CPU as
``kernel``, so the parts add up to the cell's figure; ``inclusive_shares`` does the same for the inclusive
ones, which overlap and so add up to more; ``inclusive_share(cell, "sqlalchemy")`` is one of them. Pure
functions of the recorded shares: the report calls them. The shares themselves are arithmetic too
(``CpuSplit``: each thread's CPU split by its samples), done once when the window is measured, since which
package owns a frame is read from the interpreter that ran it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from harness.analysis.stats import CellStats

KERNEL, OTHER = "kernel", "other"  # system CPU; code no known package owns (or a window without shares)
NATIVE = "native"  # native code no package owns (libc, the loader)


class Sampled(NamedTuple):
    """One stack as attribution sees it (``harness.measure.owners.sampled``): whose it is, innermost, and which
    packages have frames on it."""

    python: str | None  # the package of the innermost Python frame
    owner: str  # the sample's owner: its innermost placed frame's, ``kernel`` if caught in a system call
    packages: frozenset[str]  # the packages of its frames
    rooted: bool = True  # it holds a thread's top-level frame (runpy's, threading's; a greenlet's stack does not)
    spawner: frozenset[str] | None = None  # running SQLAlchemy's greenlet_spawn: the packages from the root to it


Owners = Counter[Sampled]  # one thread's stacks -> samples
Held = Counter[tuple[str, frozenset[str]]]  # (owner of a sample, every package on its stack) -> samples
GREENLET = "greenlet"  # the distribution whose frames start a greenlet's stack


def graft(samples: Owners) -> Owners:
    """One thread's native samples, a greenlet's continuing the stacks that spawned it.

    py-spy unwinds a greenlet's native stack only as far as the greenlet's start: it begins with the function
    the greenlet runs (SQLAlchemy's ``Session.execute``), without the request's frames (FastAPI, the server,
    the event loop) that called ``greenlet_spawn``. A sample in a greenlet without a thread's top-level frame,
    in a thread whose other samples run ``greenlet_spawn``, is shared among those samples' packages from the
    root to it, in their proportions; its owner stays. (Work SQLAlchemy hands to a task of its own, such as
    the commit ``async_sessionmaker.begin()`` runs on leaving, is under that task's stack, not the request's.)
    """
    spawners = Counter[frozenset[str]]()
    for s, n in samples.items():
        if s.rooted and s.spawner is not None:
            spawners[s.spawner] += n
    total = sum(spawners.values())
    grafted = Owners()
    for s, n in samples.items():
        if s.rooted or not total or GREENLET not in s.packages:
            grafted[s] += n
            continue
        for outside, m in spawners.items():
            grafted[s._replace(packages=s.packages | outside, rooted=True)] += n * m / total
    return grafted


def refine(python: Owners, native: Owners) -> Held:
    """One thread's samples by owner and the packages on their stacks: the Python-only recording's samples of
    each Python package, divided as the native recording divides that package's samples (into the C code it
    calls, the kernel…), each part with the packages on those native stacks (py-spy's Python-only stacks of
    coroutines often stop short of the thread's top level; its native ones do not). Without a Python-only
    recording, the native samples as they are."""
    within: dict[str | None, Held] = {}
    for s, n in native.items():
        within.setdefault(s.python, Counter())[s.owner, s.packages | {s.owner}] += n
    if not python:
        return sum(within.values(), Counter())
    refined = Held()
    for s, n in python.items():
        own = s.python or NATIVE
        split = within.get(s.python) or Counter({(own, s.packages | {own}): 1})
        total = sum(split.values())
        for key, m in split.items():
            refined[key] += n * m / total
    return refined


def distribution_name(name: str) -> str:
    """A distribution's name as the report shows it: lower case, ``_`` for runs of ``-_.``."""
    return re.sub(r"[-_.]+", "_", name).lower()


def normalised(weights: Mapping[str, float]) -> dict[str, float]:
    """Positive weights scaled to sum to 1 (a negative one, from a counter that went backwards, is dropped)."""
    positive = {p: w for p, w in weights.items() if w > 0}
    total = sum(positive.values())
    if total <= 0:
        return {}
    return largest_first({p: w / total for p, w in positive.items()})


def largest_first(shares: Mapping[str, float]) -> dict[str, float]:
    """The shares, largest first (ties by name)."""
    return dict(sorted(shares.items(), key=lambda pw: (-pw[1], pw[0])))


@dataclass(frozen=True)
class PackageCpu:
    """A window's user CPU by package, innermost and inclusively, and its system CPU by the package calling."""

    innermost: dict[str, float]  # package -> share of user CPU, by the sample's owner (the shares sum to 1)
    inclusive: dict[str, float]  # package -> share of user CPU in samples with a frame of the package
    inclusive_system: dict[str, float]  # package -> share of system CPU in system calls made under it


@dataclass
class CpuSplit:
    """User and system CPU (seconds, or samples) given out to packages thread by thread, by the thread's samples
    (``harness.measure.owners.cpu_by_package``)."""

    user: Counter[str] = field(default_factory=Counter)  # by the samples' owners
    user_under: Counter[str] = field(default_factory=Counter)  # by every package on the samples' stacks
    system_under: Counter[str] = field(default_factory=Counter)
    system: float = 0.0

    def add(self, held: Held, user: float, system: float) -> None:
        """One thread's CPU, split by its samples: outside system calls the user CPU (all ``native`` if it
        has none), in system calls the system CPU."""
        self.system += max(system, 0.0)
        if user > 0:
            outside = {key: n for key, n in held.items() if key[0] != KERNEL and n > 0}
            total = sum(outside.values())
            if not total:
                outside, total = {(NATIVE, frozenset({NATIVE})): 1}, 1
            for (owner, on_stack), n in outside.items():
                self.user[owner] += user * n / total
                self.user_under.update(dict.fromkeys(on_stack, user * n / total))
        calls = {on_stack: n for (owner, on_stack), n in held.items() if owner == KERNEL and n > 0}
        total = sum(calls.values())
        if system > 0 and total:
            for on_stack, n in calls.items():
                self.system_under.update(dict.fromkeys(on_stack - {KERNEL}, system * n / total))

    def unsampled(self, owner: str, user: float, system: float) -> None:
        """A thread without samples: its CPU runs under its owner."""
        self.user[owner] += user
        self.user_under[owner] += user
        self.system_under[owner] += system
        self.system += max(system, 0.0)

    def shares(self) -> PackageCpu:
        user = sum(s for s in self.user.values() if s > 0)
        return PackageCpu(normalised(self.user), _fractions(self.user_under, user),
                          _fractions(self.system_under, self.system))


def _fractions(seconds: Mapping[str, float], total: float) -> dict[str, float]:
    """Each package's seconds over ``total``, at most 1, largest first."""
    if total <= 0:
        return {}
    return largest_first({p: min(s / total, 1.0) for p, s in seconds.items() if s > 0 and p != KERNEL})


def cell_profile(shares: Mapping[str, float], user_us_per_insert: float,
                 system_us_per_insert: float) -> list[tuple[str, float, float]]:
    """(package, share, µs per insert), largest first: user CPU split by ``shares``, system CPU as ``kernel``.

    The shares of one cell sum to 1 over user + system, and the µs to the cell's CPU per insert.
    """
    total = user_us_per_insert + system_us_per_insert
    if total <= 0:
        return []
    user = normalised(shares) or {OTHER: 1.0}
    parts = {package: share * user_us_per_insert for package, share in user.items()}
    parts[KERNEL] = parts.get(KERNEL, 0.0) + system_us_per_insert
    return sorted(((p, us / total, us) for p, us in parts.items() if us > 0), key=lambda row: (-row[2], row[0]))


def inclusive_shares(user_under: Mapping[str, float], system_under: Mapping[str, float],
                     user_us_per_insert: float, system_us_per_insert: float) -> dict[str, float]:
    """Package -> share of the cell's CPU (user + system) that runs under it, largest first.

    ``user_under`` is each package's share of user CPU in samples whose stacks hold one of its frames,
    ``system_under`` its share of system CPU in system calls made under it (the window's
    ``profile_inclusive`` and ``profile_inclusive_system``); all the system CPU is the kernel's. A package's
    inclusive share is at least its innermost one (``cell_profile``'s), and the shares overlap.
    """
    total = user_us_per_insert + system_us_per_insert
    if total <= 0:
        return {}
    system = {**system_under, KERNEL: 1.0}
    parts = {package: (min(user_under.get(package, 0.0), 1.0) * user_us_per_insert
                       + min(system.get(package, 0.0), 1.0) * system_us_per_insert) / total
             for package in {*user_under, *system}}
    return largest_first({p: share for p, share in parts.items() if share > 0})


def cell_inclusive(cell: CellStats) -> dict[str, float] | None:
    """A cell's ``inclusive_shares``, from its profiled window and its median user and system CPU; None when it
    has none (not profiled, failed, or profiled before runs recorded the packages on each stack)."""
    profile = cell.profile or {}
    user_under = profile.get("profile_inclusive")
    if not (cell.ok and profile.get("profile_shares") and user_under is not None) or cell.median is None:
        return None
    user, system = cell.median.user_us_per_insert, cell.median.system_us_per_insert
    if user is None or system is None:
        return None
    return inclusive_shares(user_under, profile.get("profile_inclusive_system") or {}, user, system)


def inclusive_share(cell: CellStats, package: str) -> float | None:
    """The share of a cell's CPU per insert that runs under ``package`` (its frames and everything they call,
    system calls included): ``inclusive_share(cell, "SQLAlchemy")`` -> 0.62. 0.0 for a package on none of its
    stacks; None when the cell has no inclusive shares (``cell_inclusive``)."""
    shares = cell_inclusive(cell)
    return None if shares is None else shares.get(distribution_name(package), 0.0)
