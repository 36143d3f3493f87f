"""The original app as the harness reads it, without running it."""

from __future__ import annotations

from harness.measure.apps import ROOT, _constants


def test_declares_its_each_endpoint_for_the_harness() -> None:
    assert _constants(ROOT / "apps" / "seed" / "app.py")["EACH_ENDPOINT"] == "GET /test-insert-many"
