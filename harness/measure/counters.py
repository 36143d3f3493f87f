"""What a measured window costs: CPU of process trees, and PostgreSQL's own counters.

CPU is read at quiescent points only (the load generator has drained every request before WARM and
before DONE), so the Δ between two readings is exactly the work of the requests in the window plus
the servers' idle overhead, with nothing half-done on either side.

A process tree's CPU is its processes' user and system time plus what their exited children already
handed back (``children_user``/``children_system``): a granian worker or a PostgreSQL backend that ends
mid-run is still counted.

From PostgreSQL: the highest id (rows inserted since are counted with ``id > max``), the calls of each
query text in ``pg_stat_statements`` in this database (BEGIN and COMMIT included; the harness's own queries carry
a marker and are left out), whose Δ is the window's statements, and by kind its statements of each kind
(``analysis.statements``: BEGIN, COMMIT, INSERT by table, a pool's reset…, summing to the statements), and the
next transaction id, whose Δ counts the write transactions the window committed or aborted (it is immediate,
where ``pg_stat_database.xact_commit`` lags by up to a second).

From the machine: ``/proc/stat``'s steal and iowait ticks over the window and the load average at its
end, so a reader can tell a sample taken while the hypervisor held the CPU back from one that was not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil

from harness.analysis.statements import by_kind
from harness.measure.cgroup import cgroup_cpu, own_cgroup

MARK = "/* insertbench-harness */"


@dataclass(frozen=True)
class Cpu:
    user: float
    system: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.user - other.user, self.system - other.system)

    @property
    def total(self) -> float:
        return self.user + self.system


def tree_cpu(pid: int) -> Cpu:
    """User and system seconds of ``pid`` and all its descendants, living or reaped.

    Where ``pid`` is the top of a cgroup of its own (a server run as a container's main process), the
    cgroup's counters: the same figure, which also keeps processes that left the tree (``cgroup``)."""
    if (group := own_cgroup(pid)) is not None:
        return Cpu(*cgroup_cpu(group))
    root = psutil.Process(pid)
    user = system = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            user += times.user + times.children_user
            system += times.system + times.children_system
    return Cpu(user, system)


def tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants now, in bytes (pages shared between them count twice)."""
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


@dataclass(frozen=True)
class Ticks:
    """The machine's CPU time counters from /proc/stat's first line, in clock ticks."""

    total: int
    steal: int
    iowait: int

    def __sub__(self, other: Ticks) -> Ticks:
        return Ticks(self.total - other.total, self.steal - other.steal, self.iowait - other.iowait)


def machine_ticks(stat: str | None = None) -> Ticks | None:
    """All CPUs' ticks so far (None where /proc/stat cannot be read)."""
    try:
        line = (stat if stat is not None else Path("/proc/stat").read_text()).splitlines()[0]
    except (OSError, IndexError):
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice (guest time is already in user)
    values = [int(v) for v in line.split()[1:9]]
    values += [0] * (8 - len(values))
    return Ticks(total=sum(values), steal=values[7], iowait=values[4])


def machine_record(before: Ticks | None, after: Ticks | None) -> dict[str, float] | None:
    """What a sample records of the machine over its window: steal and iowait ticks, and the load average."""
    record: dict[str, float] = {}
    if before is not None and after is not None:
        delta = after - before
        record |= {"ticks": delta.total, "steal_ticks": delta.steal, "iowait_ticks": delta.iowait}
    with contextlib.suppress(OSError):
        record["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return record or None


@dataclass(frozen=True)
class DbSnapshot:
    """PostgreSQL's counters at one edge of a window (``calls`` None without pg_stat_statements)."""

    max_id: int
    calls: Mapping[str, int] | None  # query text → calls so far (entries of the same text summed)
    next_xid: int

    @property
    def statements(self) -> int | None:
        return None if self.calls is None else sum(self.calls.values())

    def __sub__(self, before: DbSnapshot) -> DbDelta:
        """What the database did between ``before`` and this snapshot."""
        if before.calls is None or self.calls is None:
            return DbDelta(statements=None, transactions=self.next_xid - before.next_xid)
        rows = [(query, self.calls.get(query, 0) - before.calls.get(query, 0)) for query in
                self.calls.keys() | before.calls.keys()]
        return DbDelta(statements=sum(n for _, n in rows), transactions=self.next_xid - before.next_xid,
                       by_kind=by_kind(rows))


@dataclass(frozen=True)
class DbDelta:
    """A window's statements and their count by kind (None without pg_stat_statements), and write transactions."""

    statements: int | None
    transactions: int
    by_kind: dict[str, int] | None = None


async def _calls(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT query, sum(calls)::bigint AS calls FROM pg_stat_statements WHERE dbid = (SELECT oid FROM "
        f"pg_database WHERE datname = current_database()) AND query NOT LIKE '%{MARK}%' "
        f"AND query NOT LIKE '%pg_stat_statements%' GROUP BY query {MARK}")
    return {row["query"]: row["calls"] for row in rows}


async def _snapshot(dsn: str, with_statements: bool) -> DbSnapshot:
    conn = await asyncpg.connect(dsn)
    try:
        max_id = await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM simple_text {MARK}")
        next_xid = await conn.fetchval(f"SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint {MARK}")
        return DbSnapshot(max_id=max_id, calls=await _calls(conn) if with_statements else None, next_xid=next_xid)
    finally:
        await conn.close()


def db_snapshot(dsn: str, with_statements: bool) -> DbSnapshot:
    return asyncio.run(_snapshot(dsn, with_statements))


async def _rows_since(dsn: str, max_id: int) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT id, text FROM simple_text WHERE id > $1 ORDER BY id {MARK}", max_id)
        return [(row["id"], row["text"]) for row in rows]
    finally:
        await conn.close()


def rows_since(dsn: str, max_id: int) -> list[tuple[int, str]]:
    """Every row with an id above ``max_id``: what a sample inserted."""
    return asyncio.run(_rows_since(dsn, max_id))
