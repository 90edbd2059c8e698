"""Where compressed streams live: the :class:`TokenStore` protocol and an in-memory store.

A store holds serialised :class:`~streamdycoke.segment.TokenSegment` bytes per stream, keyed by
frame index. Appends are idempotent on ``(stream_id, frame_index)``: replaying a frame after a crash
stores nothing twice. The Redis store of the pipeline implements the same protocol.
"""

from __future__ import annotations

import bisect
import threading
from typing import Protocol, runtime_checkable

from .segment import TokenSegment, decode_segment, encode_segment

__all__ = ["InMemoryTokenStore", "TokenStore"]


@runtime_checkable
class TokenStore(Protocol):
    def append(self, segment: TokenSegment) -> bool:
        """Store a segment; return False (and change nothing) if its frame is already stored."""

    def read(
        self, stream_id: str, start: float | None = None, end: float | None = None,
        *, from_keyframe: bool = True,
    ) -> list[TokenSegment]:
        """Segments of a stream with ``start <= timestamp <= end``, in frame order.

        With ``from_keyframe`` the result begins at the last keyframe at or before ``start``, so
        it reconstructs on its own.
        """

    def last_frame_index(self, stream_id: str) -> int | None:
        """Highest stored frame index of a stream, or None."""


class InMemoryTokenStore:
    """A :class:`TokenStore` in process memory, keeping the last ``max_segments`` per stream.

    Segments are kept as wire bytes, so everything written went through the format.
    """

    def __init__(self, max_segments: int | None = None) -> None:
        self.max_segments = max_segments
        self._frames: dict[str, list[int]] = {}
        self._meta: dict[str, dict[int, tuple[float, bool, bytes]]] = {}
        self._lock = threading.Lock()

    def append(self, segment: TokenSegment) -> bool:
        blob = encode_segment(segment)
        with self._lock:
            frames = self._frames.setdefault(segment.stream_id, [])
            meta = self._meta.setdefault(segment.stream_id, {})
            if segment.frame_index in meta:
                return False
            bisect.insort(frames, segment.frame_index)
            meta[segment.frame_index] = (segment.timestamp, segment.keyframe, blob)
            if self.max_segments is not None:
                while len(frames) > self.max_segments:
                    del meta[frames.pop(0)]
            return True

    def read(
        self, stream_id: str, start: float | None = None, end: float | None = None,
        *, from_keyframe: bool = True,
    ) -> list[TokenSegment]:
        with self._lock:
            frames = list(self._frames.get(stream_id, []))
            meta = dict(self._meta.get(stream_id, {}))
        lo = -float("inf") if start is None else start
        hi = float("inf") if end is None else end
        chosen = [f for f in frames if lo <= meta[f][0] <= hi]
        if from_keyframe and chosen and not meta[chosen[0]][1]:
            first = frames.index(chosen[0])
            back = next((i for i in range(first, -1, -1) if meta[frames[i]][1]), None)
            if back is not None:
                chosen = frames[back:first] + chosen
        return [decode_segment(meta[f][2]) for f in chosen]

    def last_frame_index(self, stream_id: str) -> int | None:
        with self._lock:
            frames = self._frames.get(stream_id)
            return frames[-1] if frames else None

    def nbytes(self, stream_id: str) -> int:
        """Bytes held for a stream."""
        with self._lock:
            return sum(len(v[2]) for v in self._meta.get(stream_id, {}).values())
