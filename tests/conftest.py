"""Fixtures both test folders use."""

from __future__ import annotations

import pytest

from harness.measure.callgrind import ValgrindMissing, require_valgrind


@pytest.fixture(scope="module")
def valgrind() -> None:
    try:
        require_valgrind()
    except ValgrindMissing as exc:
        pytest.skip(str(exc))
