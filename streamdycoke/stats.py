"""Summary statistics used by the benchmarks and the camera counters."""

from __future__ import annotations

from typing import Sequence

__all__ = ["percentile"]


def percentile(xs: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``xs`` by the nearest-rank rule (an observed value), or None if empty.

    >>> percentile([5, 1, 4, 2, 3], 0.5)
    3
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if not len(xs):
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]
