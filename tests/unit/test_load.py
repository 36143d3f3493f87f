"""harness.measure.load without a process: the texts it sends, and the numbers a LoadSpec refuses before it starts."""

from __future__ import annotations

import math

import pytest

from harness.measure.load import LoadError, text_for
from tests._load import spec_for


def test_text_for_names_each_request_and_each_bulk_item():
    assert text_for("run1-3", 0) == "run1-3-0"
    assert text_for("p", 41) == "p-41"
    assert text_for("p", 41, 2) == "p-41-2"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("duration", math.nan, "duration must be"), ("duration", math.inf, "duration must be"),
        ("duration", 0, "duration must be"), ("duration", -1.0, "duration must be"),
        ("rate", math.nan, "rate must be"), ("rate", -1, "rate must be"), ("rate", math.inf, "rate must be"),
        ("warmup", math.nan, "warmup must be"), ("warmup", -0.1, "warmup must be"),
        ("timeout", 0, "timeout must be"), ("timeout", math.inf, "timeout must be"),
        ("timeout", -2, "timeout must be"), ("duration", "3", "duration must be"), ("duration", True, "duration"),
        ("requests", -1, "requests must be"), ("requests", 1.5, "requests must be"),
    ],
)  # fmt: skip
def test_load_spec_refuses_a_bad_number_before_starting_anything(field, value, message):
    with pytest.raises(LoadError, match=message):
        spec_for(9, **{field: value})


def test_load_spec_accepts_zero_warmup_zero_rate_and_zero_duration_with_requests():
    spec = spec_for(9, warmup=0, rate=0, duration=0, requests=10)
    assert (spec.warmup, spec.rate, spec.duration, spec.requests) == (0, 0, 0, 10)
