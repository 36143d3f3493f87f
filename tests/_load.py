"""A LoadSpec aimed at a test's own server on loopback: small, short, and changed field by field."""

from __future__ import annotations

import dataclasses

from harness.measure.load import LoadSpec


def spec_for(port: int, **changes: object) -> LoadSpec:
    base = LoadSpec(host="127.0.0.1", port=port, method="POST", path="/items", body="text", inserts=1,
                    concurrency=8, rate=0, warmup=0.2, duration=0.5, prefix="t")  # fmt: skip
    return dataclasses.replace(base, **changes)
