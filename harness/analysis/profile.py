"""CPU by package, per insert: a profiled window's shares scaled to the cell's CPU per insert.

A profiled window (``harness.measure.profile``) records each package's share of the server's user CPU;
``cell_profile`` scales the shares to the cell's user CPU per insert and adds its system CPU as ``kernel``,
so the parts add up to the cell's figure. A pure function of the recorded shares: the report calls it.
"""

from __future__ import annotations

from collections.abc import Mapping

KERNEL, OTHER = "kernel", "other"  # system CPU; code no known package owns (or a window without shares)


def normalised(weights: Mapping[str, float]) -> dict[str, float]:
    """Positive weights scaled to sum to 1 (a negative one, from a counter that went backwards, is dropped)."""
    positive = {p: w for p, w in weights.items() if w > 0}
    total = sum(positive.values())
    if total <= 0:
        return {}
    return dict(sorted(((p, w / total) for p, w in positive.items()), key=lambda pw: (-pw[1], pw[0])))


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
