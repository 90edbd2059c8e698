"""One exponential backoff for everything in the service layer that tries again after a failure: a camera
worker restarting after a fault, ingest reopening its source, a webhook or alert sink retrying."""

from __future__ import annotations

import math

__all__ = ["Backoff"]


class Backoff:
    """Waits of ``first_s`` after the first failure, doubling up to ``max_s``; back to none after a success.

    Two ways to use it: a loop that sleeps takes :meth:`failed`'s wait; a sink that is polled asks
    :meth:`ready` with the time instead.
    """

    def __init__(self, first_s: float = 1.0, max_s: float = 300.0) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"need 0 < first_s <= max_s, got {first_s} and {max_s}")
        self.first_s, self.max_s = first_s, max_s
        self.delay = 0.0  # the last wait handed out (0: none since the last success)
        self.until = -math.inf

    def ready(self, now: float) -> bool:
        """Whether the wait after the last failure is over at ``now``."""
        return now >= self.until

    def failed(self, now: float = 0.0) -> float:
        """Record a failure at ``now``; returns the wait before the next try."""
        self.delay = self.first_s if self.delay == 0 else min(self.max_s, self.delay * 2)
        self.until = now + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay, self.until = 0.0, -math.inf
