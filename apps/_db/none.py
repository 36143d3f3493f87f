"""The `none` layer: no database at all; a counter stands in for the id, so only HTTP and framework cost.

Each worker process counts from its own base (its pid × 2³²), so the ids several workers hand out never
collide (the harness checks that every acknowledged id is unique).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence


class NoDatabase:
    needs_dsn = False

    def __init__(self, dsn: str = "", pool_size: int = 1) -> None:
        self._ids = itertools.count(1)
        self.ready = False

    async def start(self) -> None:
        self._ids = itertools.count((os.getpid() << 32) + 1)  # in the worker, after any fork
        self.ready = True

    async def stop(self) -> None:
        self.ready = False

    async def insert_one(self, text: str) -> int:
        return next(self._ids)

    async def insert_many(self, texts: Sequence[str]) -> list[int]:
        return [next(self._ids) for _ in texts]

    insert_each = insert_many  # N ids, as N insert_one calls would give
