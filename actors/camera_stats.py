"""A camera's stats: one typed model written by its actor, kept in the cache (``P:{cam}:stats``, JSON) and
read by the gateway's camera list, the console, the benchmarks and the demo.

Counts are since the actor started (a restarted actor starts over); percentiles are over its last
10,000 processed frames. A camera the supervisor could not place, or whose actor did not answer, has
``error`` set and no counts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CameraStats", "StandingStats"]


class StandingStats(BaseModel):
    """The camera's standing queries: rounds asked, prompt tokens an LLM reused, queries alerting now."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = 0
    reused_tokens: int = 0
    alerting: list[str] = Field(default_factory=list)


class CameraStats(BaseModel):
    """What one camera's actor reports (``model_dump()`` is the JSON the cache holds)."""

    model_config = ConfigDict(extra="ignore")  # a newer writer's fields do not break an older reader

    camera: str
    consumed: int = 0  # frames read from the camera's topic: processed + skipped + dead-lettered
    processed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    replayed: int = 0  # read again after a restart, already stored: not counted again
    repaired: int = 0  # stored again after the cache lost them
    tokens_in: int = 0
    tokens_kept: int = 0
    lag: int | None = None  # messages behind the topic's end; None when unknown
    cache_bytes: int | None = None
    frame_to_cache_p50_ms: float | None = None
    frame_to_cache_p99_ms: float | None = None
    stages_ms: dict[str, dict[str, float | int | None]] = Field(default_factory=dict)
    standing: StandingStats | None = None
    status: Literal["ok", "recovering"] | None = None
    faults: dict[str, int] = Field(default_factory=dict)
    last_fault: str | None = None
    frames_missing: int = 0
    node: str | None = None  # the Ray node id the actor runs on
    error: str | None = None  # "unplaced", or why the actor did not answer
    detail: str | None = None

    @property
    def keep_ratio(self) -> float | None:
        """Tokens kept over tokens in, None before any."""
        return self.tokens_kept / self.tokens_in if self.tokens_in else None
