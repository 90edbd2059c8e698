"""Where compressed streams live: the :class:`TokenStore` protocol and an in-memory store.

A store holds serialised :class:`~streamdycoke.segment.TokenSegment` bytes per stream, keyed by
frame index, and a small stats mapping per stream (what its writer last reported). Every store has the
same semantics, pinned by one contract test run against each:

- appends are idempotent on ``(stream_id, frame_index)``: replaying a frame after a crash stores
  nothing twice;
- reads of a time window start at the last keyframe at or before the window (so they reconstruct
  on their own) and come in frame order;
- retention, by age (``retention_s`` behind the stream's newest timestamp) and by size
  (``max_bytes`` per stream), always cuts at a keyframe and never drops the newest keyframe's group.

The Redis store of the pipeline (``actors.token_cache.RedisTokenStore``) implements the same protocol.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterable, Protocol, runtime_checkable

from .segment import TokenSegment, decode_segment, encode_segment

__all__ = ["CacheLostError", "DecodedReads", "InMemoryTokenStore", "TokenStore"]


class CacheLostError(RuntimeError):
    """The store no longer holds what its writer last wrote (a failover before replication, a restart
    without persistence): raised by ``append_many(..., expect_last=...)``, which then stored nothing."""


@runtime_checkable
class TokenStore(Protocol):
    def append(self, segment: TokenSegment) -> bool:
        """Store a segment; return False (and change nothing) if its frame is already stored."""

    def append_many(self, segments: Iterable[TokenSegment], *, expect_last: int | None = None) -> list[bool]:
        """Store segments (one round trip where the store has them), then apply retention; True for each new one.

        ``expect_last`` (one stream's segments, in frame order): the stream's highest stored frame index as
        the writer last left it (-1: none). If the store's differs, nothing is stored and
        :class:`CacheLostError` is raised: the store lost what it had acknowledged."""

    def read(
        self, stream_id: str, start: float | None = None, end: float | None = None,
        *, from_keyframe: bool = True,
    ) -> list[TokenSegment]:
        """Segments of a stream with ``start <= timestamp <= end``, in frame order.

        With ``from_keyframe`` the result begins at the last keyframe at or before ``start``, so
        it reconstructs on its own.
        """

    def read_recent(self, stream_id: str, window_s: float) -> list[TokenSegment]:
        """The last ``window_s`` seconds behind the stream's newest frame (from a keyframe)."""

    def read_raw(
        self, stream_id: str, start: float | None = None, end: float | None = None,
        *, from_keyframe: bool = True,
    ) -> list[bytes]:
        """What :meth:`read` returns, as wire-format bytes (checked when decoded, :func:`decode_segment`):
        for a reader that forwards the window (the gateway, standing queries) and leaves decoding to
        the one that reads the tokens."""

    def read_recent_raw(self, stream_id: str, window_s: float) -> list[bytes]:
        """What :meth:`read_recent` returns, as wire-format bytes."""

    def put_live(self, segment: TokenSegment) -> None:
        """Hold ``segment`` (whole: every position) as its stream's live frame, the newest processed frame, in
        place of the one before (:mod:`streamdycoke.reading`). Not part of the stored window."""

    def live_raw(self, stream_id: str) -> bytes | None:
        """The stream's live frame as wire bytes, or None."""

    def last_frame_index(self, stream_id: str) -> int | None:
        """Highest stored frame index of a stream, or None."""

    def newest_timestamp(self, stream_id: str) -> float | None:
        """Capture time of the newest stored frame of a stream, or None."""

    def frame_count(self, stream_id: str) -> int:
        """Segments stored for a stream."""

    def nbytes(self, stream_id: str) -> int:
        """Bytes of segments stored for a stream."""

    def streams(self) -> list[str]:
        """Every stream the store holds frames for, sorted."""

    def set_stats(self, stream_id: str, stats: dict) -> None:
        """Record a stream writer's latest counters (JSON-serialisable)."""

    def get_stats(self, stream_id: str) -> dict | None:
        """What :meth:`set_stats` last recorded for a stream, or None."""


@dataclass
class _Entry:
    timestamp: float
    keyframe: bool
    blob: bytes


class DecodedReads:
    """The reads a store derives from its own :meth:`read_raw` and ``newest_timestamp``: decoded
    segments and the recent window, written once for every store."""

    def read(
        self, stream_id: str, start: float | None = None, end: float | None = None,
        *, from_keyframe: bool = True,
    ) -> list[TokenSegment]:
        return [decode_segment(b) for b in self.read_raw(stream_id, start, end, from_keyframe=from_keyframe)]

    def read_recent_raw(self, stream_id: str, window_s: float) -> list[bytes]:
        newest = self.newest_timestamp(stream_id)
        return [] if newest is None else self.read_raw(stream_id, newest - window_s, newest)

    def read_recent(self, stream_id: str, window_s: float) -> list[TokenSegment]:
        return [decode_segment(b) for b in self.read_recent_raw(stream_id, window_s)]

    def reader_window_raw(self, stream_id: str, start: float | None = None, window_s: float | None = None) -> list[bytes]:
        """What a reader is sent for a window (wire bytes): the stored segments from ``start`` (or the last
        ``window_s`` seconds), then the live frame; :func:`streamdycoke.reading.reading` of the decoded
        list is what the reader reads (it sets aside a live frame older than the window's newest)."""
        blobs = self.read_recent_raw(stream_id, window_s) if window_s is not None else self.read_raw(stream_id, start)
        live = self.live_raw(stream_id)
        return blobs if live is None or not blobs else [*blobs, live]


class InMemoryTokenStore(DecodedReads):
    """A :class:`TokenStore` in process memory.

    Segments are kept as wire bytes, so everything written went through the format.

    Args:
        retention_s: keep frames this far behind a stream's newest (None: no limit).
        max_bytes: keep at most this many segment bytes per stream (None: no limit).
    """

    def __init__(self, retention_s: float | None = None, max_bytes: int | None = None) -> None:
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self._streams: dict[str, dict[int, _Entry]] = {}
        self._stats: dict[str, dict] = {}
        self._live: dict[str, bytes] = {}
        self._lock = threading.Lock()

    # -- writes ----------------------------------------------------------------------------------
    def append(self, segment: TokenSegment) -> bool:
        return self.append_many([segment])[0]

    def append_many(self, segments: Iterable[TokenSegment], *, expect_last: int | None = None) -> list[bool]:
        segments = list(segments)
        blobs = [encode_segment(s) for s in segments]
        added = []
        with self._lock:
            entries = self._streams.get(segments[0].stream_id) if segments else None
            fresh = any(entries is None or s.frame_index not in entries for s in segments)
            if expect_last is not None and fresh:  # a batch stored already is a replay: not checked
                have = max(entries) if entries else -1
                if have != expect_last:
                    raise CacheLostError(f"stream {segments[0].stream_id}: highest stored frame is {have}, its writer "
                                         f"last stored {expect_last}")
            for seg, blob in zip(segments, blobs):
                entries = self._streams.setdefault(seg.stream_id, {})
                new = seg.frame_index not in entries
                if new:
                    entries[seg.frame_index] = _Entry(seg.timestamp, seg.keyframe, blob)
                added.append(new)
            for stream_id in {s.stream_id for s in segments}:
                self._retain(stream_id)
        return added

    def _retain(self, stream_id: str) -> None:
        entries = self._streams[stream_id]
        if not entries or (self.retention_s is None and self.max_bytes is None):
            return  # nothing to enforce: no sort of the whole stream per write
        by_time = sorted(entries.items(), key=lambda kv: (kv[1].timestamp, kv[0]))
        keyframes = [e.timestamp for _, e in by_time if e.keyframe]
        if self.retention_s is not None:
            cutoff = by_time[-1][1].timestamp - self.retention_s
            cut = max((t for t in keyframes if t <= cutoff), default=None)
            if cut is not None:
                self._drop_before(stream_id, cut)
        if self.max_bytes is not None:
            while self._nbytes(stream_id) > self.max_bytes:
                kfs = sorted(e.timestamp for e in self._streams[stream_id].values() if e.keyframe)
                if len(kfs) < 2:
                    break
                self._drop_before(stream_id, kfs[1])

    def _drop_before(self, stream_id: str, timestamp: float) -> None:
        entries = self._streams[stream_id]
        for f in [f for f, e in entries.items() if e.timestamp < timestamp]:
            del entries[f]

    def put_live(self, segment: TokenSegment) -> None:
        blob = encode_segment(segment)
        with self._lock:
            self._live[segment.stream_id] = blob

    # -- reads -----------------------------------------------------------------------------------
    def live_raw(self, stream_id: str) -> bytes | None:
        with self._lock:
            return self._live.get(stream_id)

    def read_raw(
        self, stream_id: str, start: float | None = None, end: float | None = None,
        *, from_keyframe: bool = True,
    ) -> list[bytes]:
        with self._lock:
            entries = dict(self._streams.get(stream_id, {}))
        lo = -float("inf") if start is None else start
        hi = float("inf") if end is None else end
        if from_keyframe and start is not None:
            back = [e.timestamp for e in entries.values() if e.keyframe and e.timestamp <= start]
            if back:
                lo = max(back)
        chosen = sorted(f for f, e in entries.items() if lo <= e.timestamp <= hi)
        return [entries[f].blob for f in chosen]

    def last_frame_index(self, stream_id: str) -> int | None:
        with self._lock:
            entries = self._streams.get(stream_id)
            return max(entries) if entries else None

    def newest_timestamp(self, stream_id: str) -> float | None:
        with self._lock:
            entries = self._streams.get(stream_id)
            return max(e.timestamp for e in entries.values()) if entries else None

    def frame_count(self, stream_id: str) -> int:
        with self._lock:
            return len(self._streams.get(stream_id, {}))

    def nbytes(self, stream_id: str) -> int:
        with self._lock:
            return self._nbytes(stream_id)

    def _nbytes(self, stream_id: str) -> int:
        return sum(len(e.blob) for e in self._streams.get(stream_id, {}).values())

    def streams(self) -> list[str]:
        with self._lock:
            return sorted(s for s, entries in self._streams.items() if entries)

    # -- stream stats ----------------------------------------------------------------------------
    def set_stats(self, stream_id: str, stats: dict) -> None:
        with self._lock:
            self._stats[stream_id] = dict(stats)

    def get_stats(self, stream_id: str) -> dict | None:
        with self._lock:
            s = self._stats.get(stream_id)
            return None if s is None else dict(s)
