"""Summary statistics used by the benchmarks and the camera counters."""

from __future__ import annotations

from typing import Sequence

__all__ = ["StageTimes", "percentile"]


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


class StageTimes:
    """Per-stage latency samples of one stream: the last ``keep`` of each stage for percentiles, and
    the ones not yet exported, for a metrics exporter to drain. Seconds throughout.

    >>> t = StageTimes()
    >>> t.add("encode", 0.002); t.add("encode", 0.004)
    >>> t.percentile_ms("encode", 0.5)
    4.0
    """

    def __init__(self, keep: int = 10_000) -> None:
        from collections import deque

        self._keep = keep
        self._deque = deque
        self.recent: dict[str, "deque[float]"] = {}
        self._new: dict[str, list[float]] = {}

    def add(self, stage: str, seconds: float) -> None:
        if stage not in self.recent:
            self.recent[stage] = self._deque(maxlen=self._keep)
            self._new[stage] = []
        self.recent[stage].append(seconds)
        new = self._new[stage]
        new.append(seconds)
        if len(new) > 2 * self._keep:  # nobody drains: stay bounded
            del new[: -self._keep]

    def extend(self, stage: str, seconds: list[float]) -> None:
        for s in seconds:
            self.add(stage, s)

    def drain(self) -> dict[str, list[float]]:
        """Samples added since the last call, by stage."""
        out = {k: v for k, v in self._new.items() if v}
        self._new = {k: [] for k in self._new}
        return out

    def clear(self) -> None:
        """Forget the samples kept for percentiles (e.g. after a warm-up); undrained ones stay."""
        for d in self.recent.values():
            d.clear()

    def percentile_ms(self, stage: str, q: float) -> float | None:
        p = percentile(list(self.recent.get(stage, ())), q)  # a copy: another thread may append
        return None if p is None else 1e3 * p

    def summary_ms(self) -> dict[str, dict[str, float | int | None]]:
        """``{stage: {"n", "p50", "p99"}}`` in milliseconds (one sort per stage)."""
        out = {}
        for stage, d in list(self.recent.items()):
            xs = sorted(d)  # a copy: another thread may append
            if xs:
                out[stage] = {"n": len(xs), "p50": 1e3 * xs[min(len(xs) - 1, int(0.5 * len(xs)))],
                              "p99": 1e3 * xs[min(len(xs) - 1, int(0.99 * len(xs)))]}
        return out
