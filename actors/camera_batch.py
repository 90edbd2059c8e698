"""A camera's batch, decided: what each record of a polled batch becomes, with no broker or cache in sight.

:class:`CameraHandler` turns a batch of its topic's records into a :class:`BatchOutcome` (the segments to
store, the dead letters to send, the faults seen, the counts, the scene cuts, the snapshots and the
live frame: the newest processed frame, whole) through the camera's pipeline; :class:`CameraWorker <actors.camera.CameraWorker>` around it
polls, writes, sends and commits. Where each frame stands is one :class:`Ledger`: the highest index
consumed, counted and stored, and what a repair must store again. Each record is one of (in the order
they are told apart):

- a **gap**: its first frame is past the next expected index (first sight: the topic may have been
  recreated, so the batch stops and the worker re-reads the topic from its start; seen again: the
  frames are gone, counted as missing);
- **bad**: it does not parse, is another camera's, is stamped in the future, or claims skipped frames
  already accounted for: a dead letter;
- a **skip record**: frames ingest's sampler skipped (no pixels), counted as skipped;
- a **replay** of a frame the cache holds: counted only if the batch that stored it never committed; a
  newer frame under a stored index is a producer that reused the index (a dead letter);
- a **repair**: a frame counted before that the cache lost, stored again, not counted again;
- **new**: through the pipeline (processed or skipped by the camera's sampler).

Size: over 300 lines by its docstrings (each accounting rule is said where it is applied); its code is under
300.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from streamdycoke.sampler import SamplerDecision
from streamdycoke.segment import TokenSegment

from .frames import FrameFormatError, decode_frame, peek_indices

__all__ = ["MAX_CLOCK_SKEW_S", "BatchOutcome", "CameraHandler", "Counts", "Ledger", "parse_meta"]

log = logging.getLogger(__name__)

# A frame stamped further ahead of this machine's clock is poison (ingest stamps with its own wall
# clock): one such stamp would make every older frame look expired to the cache's retention.
MAX_CLOCK_SKEW_S = 300.0

COUNTS = ("consumed", "processed", "skipped", "dead_lettered", "replayed", "repaired", "tokens_in", "tokens_kept")


@dataclass
class Counts:
    """Every frame consumed is exactly one of processed, skipped (sampler) or dead-lettered."""

    consumed: int = 0
    processed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    replayed: int = 0  # already in the cache (a replay after a restart): neither stored nor counted again
    repaired: int = 0  # counted before, then lost by the cache (a failover, a restart without persistence): stored again
    tokens_in: int = 0
    tokens_kept: int = 0

    def add(self, other: "Counts") -> None:
        """Add a committed batch's counts."""
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def parse_meta(meta: str) -> tuple[int | None, int | None]:
    """The commit metadata ``"<last frame index consumed>:<highest frame index stored>"`` (older commits: the
    first alone) -> the two numbers, None where absent or unreadable."""
    counted, _, stored = (meta or "").partition(":")
    num = lambda t: int(t) if t.lstrip("-").isdigit() else None  # noqa: E731
    return num(counted), num(stored)


@dataclass
class Ledger:
    """Where one camera's frames stand.

    Attributes:
        last_index: the highest frame index consumed (committed with the offset, as its metadata).
        last_ts: capture time of the newest frame decided (a replay is never newer than it).
        reread_for: the expected index the topic was re-read from its start for (a gap's first sight).
        counted_through: the highest index the counters account for (moved at each commit; at start, the
            committed one): a replay above it was stored by a batch whose commit failed, never counted.
        stored_through: the highest index this camera stored (what the next write expects the cache to hold).
        repair_through: frames up to this index were counted but the cache lost them: they are stored again
            as they are read again, counted as repaired; None when no repair is under way.
        repair_done: a frame past ``repair_through`` was read: the repair ends with this batch.
        loss_counted: the cache loss being repaired is counted as a fault already.
        frames_missing: frames a gap left out for good (expired, or lost with a broker's data).
    """

    last_index: int | None = None
    last_ts: float = 0.0
    reread_for: int | None = None
    counted_through: int = -1
    stored_through: int = -1
    repair_through: int | None = None
    repair_done: bool = False
    loss_counted: bool = False
    frames_missing: int = 0

    def meta(self) -> str:
        """The commit metadata (:func:`parse_meta`)."""
        return f"{self.last_index}:{self.stored_through}"

    def expected(self) -> int | None:
        """The next frame index due, or None before any."""
        return None if self.last_index is None else self.last_index + 1

    def consume(self, index: int | None) -> bool:
        """Note a record that accounts for frames up to ``index``; whether it is new (not read before)."""
        new = index is None or self.last_index is None or index > self.last_index
        if index is not None and new:
            self.last_index = index
        return new

    def repairing(self, index: int) -> bool:
        """Whether frame ``index``, read again, is one the cache lost (to be stored again)."""
        return self.repair_through is not None and index <= self.repair_through

    def committed(self) -> None:
        """The batch is durable: the counters now account for every frame consumed."""
        if self.last_index is not None:
            self.counted_through = max(self.counted_through, self.last_index)


@dataclass
class BatchOutcome:
    """What a batch became (:meth:`CameraHandler.decide`).

    Attributes:
        segments: to store, in frame order.
        timings: per stored new frame, ``(capture time, {stage: seconds})`` so far (transit, wait, encode,
            compress, snapshot).
        dead_letters: ``(record, reason, detail)`` to send to the dead-letter topic.
        faults: ``(kind, message)`` seen deciding (``topic_reset``, ``gap``, ``index_reused``, ``snapshot``).
        counts: the batch's counts (they count once the batch is committed).
        cuts: capture times the sampler cut on.
        snapshots: ``(frame index, capture time, JPEG)`` to store after the segments.
        live: the batch's newest processed frame, whole (:mod:`streamdycoke.reading`), or None.
        reread_from: the offset of a record whose index leaves a gap seen for the first time (the batch stops
            there; the topic is to be re-read from its start), else None.
    """

    segments: list[TokenSegment] = field(default_factory=list)
    timings: list[tuple[float, dict]] = field(default_factory=list)
    dead_letters: list[tuple[object, str, str]] = field(default_factory=list)
    faults: list[tuple[str, str]] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    cuts: list[float] = field(default_factory=list)
    snapshots: list[tuple[int, float, bytes]] = field(default_factory=list)
    live: TokenSegment | None = None
    reread_from: int | None = None


class CameraHandler:
    """Decides one camera's batches through its pipeline (module docstring).

    Args:
        camera_id: the camera.
        topic: its topic (named in messages).
        snapshots: the camera's :class:`~actors.snapshots.SnapshotTaker`, or None.
    """

    def __init__(self, camera_id: str, topic: str, snapshots=None) -> None:
        self.camera_id, self.topic, self.snapshots = camera_id, topic, snapshots

    def decide(self, batch: list, pipeline, ledger: Ledger, polled: float) -> BatchOutcome:
        """Run ``batch``'s records (in offset order) through ``pipeline``, moving ``ledger``; ``polled``: when
        the poll returned (wall clock)."""
        out = BatchOutcome()
        stored_before = pipeline.state.last_frame_index  # the newest frame stored before this batch
        newest = None  # (message, its tokens when processed) of the newest processed frame
        for rec in batch:
            span = peek_indices(rec.value)  # (first, last) frame index the message accounts for
            first, index = span if span is not None else (None, None)
            expected = ledger.expected()
            if first is not None and expected is not None and first > expected:
                if self._gap(rec, first, expected, ledger, out):
                    break
            is_new = ledger.consume(index)
            try:
                msg = self._check(rec, first, index, expected, is_new)
            except FrameFormatError as exc:
                if not is_new:  # read again by a repair: dead-lettered and counted the first time
                    out.counts.replayed += 1
                    continue
                out.counts.consumed += 1
                self._dead_letter(out, rec, exc.reason, str(exc))
                continue
            if msg.rgb is None:  # a skip record: frames ingest's sampler skipped
                self._skip_record(msg, is_new, ledger, out.counts)
            elif msg.frame_index <= pipeline.state.last_frame_index:
                self._replay(rec, msg, stored_before, ledger, out)
            elif not is_new:
                self._repair(msg, pipeline, ledger, out)
            else:
                if ledger.repair_through is not None:  # past what the cache had lost: the repair is done
                    ledger.repair_done = True
                tokens = self._new(rec, msg, pipeline, ledger, out, polled)
                if tokens is not None:  # processed: its tokens are at hand, no encoder work for the live frame
                    newest = (msg, tokens)
        if newest is not None:
            msg, tokens = newest
            out.live = pipeline.live_segment(msg.frame_index, msg.timestamp, tokens)
        return out

    # -- each kind of record -------------------------------------------------------------------------
    @staticmethod
    def _dead_letter(out: BatchOutcome, rec, reason: str, detail: str) -> None:
        out.counts.dead_lettered += 1
        out.dead_letters.append((rec, reason, detail))

    def _gap(self, rec, first: int, expected: int, ledger: Ledger, out: BatchOutcome) -> bool:
        """A record past the next expected index; True when the batch stops to re-read the topic."""
        if ledger.reread_for != expected:  # first sight: the topic may have been recreated under us
            ledger.reread_for = expected
            out.faults.append(("topic_reset", f"topic_reset: frame {first} at offset {rec.offset} follows frame "
                                              f"{ledger.last_index}; re-reading {self.topic} from its start"))
            out.reread_from = rec.offset
            return True
        ledger.frames_missing += first - expected  # re-read, still missing: expired or lost with the broker's data
        out.faults.append(("gap", f"gap: frames {expected}..{first - 1} are not in {self.topic}; going on"))
        return False

    def _check(self, rec, first: int | None, index: int | None, expected: int | None, is_new: bool):
        """The record's message, or :class:`FrameFormatError` saying why it is a dead letter."""
        msg = decode_frame(rec.value)
        if msg.camera != self.camera_id:
            raise FrameFormatError("unknown_camera", f"message for camera {msg.camera!r} on {self.topic}")
        if msg.timestamp > time.time() + MAX_CLOCK_SKEW_S:
            raise FrameFormatError("timestamp_in_future", f"captured at {msg.timestamp:.3f}, more than "
                                                          f"{MAX_CLOCK_SKEW_S:.0f} s ahead of this machine's clock")
        if is_new and expected is not None and first is not None and first < expected:
            raise FrameFormatError("bad_skip_count", f"frame {index} claims {msg.skipped_before} skipped frames "
                                                     f"before it, back to {first}, but frames up to {expected - 1} "
                                                     "are already accounted for")
        return msg

    @staticmethod
    def _skip_record(msg, is_new: bool, ledger: Ledger, c: Counts) -> None:
        if is_new:
            c.consumed += msg.frames
            c.skipped += msg.frames
            ledger.last_ts = max(ledger.last_ts, msg.timestamp)
        else:
            c.replayed += msg.frames

    def _replay(self, rec, msg, stored_before: int, ledger: Ledger, out: BatchOutcome) -> None:
        """A frame whose index the stream has stored already."""
        c = out.counts
        if msg.timestamp > ledger.last_ts:  # not a replay: a restarted producer reused the index
            ledger.frames_missing += 1
            message = (f"index_reused: frame {msg.frame_index} at offset {rec.offset} is newer than the stored "
                       "frame of that index; it cannot be stored")
            out.faults.append(("index_reused", message))
            c.consumed += msg.frames
            c.skipped += msg.skipped_before
            self._dead_letter(out, rec, "index_reused", message)
        elif ledger.counted_through < msg.frame_index <= stored_before:  # stored by a batch whose commit failed
            c.consumed += msg.frames
            c.skipped += msg.skipped_before
            c.processed += 1
        else:
            c.replayed += msg.frames  # a replay of a frame the cache already holds, counted before

    @staticmethod
    def _repair(msg, pipeline, ledger: Ledger, out: BatchOutcome) -> None:
        """A frame read again, accounted for before: stored again if the cache lost it, else a replay."""
        if ledger.repairing(msg.frame_index):  # stored again, through the same pipeline, not counted again
            decision = SamplerDecision(True, msg.pixel_change, msg.scene_cut) if msg.sampled else None
            try:
                res = pipeline.push(msg.rgb, msg.frame_index, msg.timestamp, decision=decision)
            except ValueError:  # dead-lettered the first time: it stays so
                res = None
            if res is not None and res.segment is not None:
                out.counts.repaired += 1
                out.segments.append(res.segment)
                return
        out.counts.replayed += msg.frames

    def _new(self, rec, msg, pipeline, ledger: Ledger, out: BatchOutcome, polled: float):
        """A new frame with pixels through the pipeline. Returns its tokens when it was processed, else None
        (the sampler skipped it, or it was dead-lettered)."""
        c = out.counts
        c.consumed += msg.frames
        c.skipped += msg.skipped_before  # skipped by ingest's sampler, accounted for by this frame
        ledger.last_ts = max(ledger.last_ts, msg.timestamp)
        decision = SamplerDecision(True, msg.pixel_change, msg.scene_cut) if msg.sampled else None
        started = time.time()
        try:
            res = pipeline.push(msg.rgb, msg.frame_index, msg.timestamp, decision=decision, keep_tokens=True)
        except ValueError as exc:  # e.g. a frame too small for the sampler
            self._dead_letter(out, rec, "bad_frame", str(exc))
            return None
        if res.scene_cut:
            out.cuts.append(msg.timestamp)
        if res.segment is None:
            c.skipped += 1
            return None
        c.processed += 1
        c.tokens_in += res.segment.num_positions
        c.tokens_kept += res.segment.num_kept
        out.segments.append(res.segment)
        stages = {"transit": max(0.0, polled - rec.timestamp / 1e3), "wait": started - polled,
                  "encode": res.encode_s, "compress": res.compress_s}
        if self.snapshots is not None and self.snapshots.due(msg.timestamp):
            t_snap = time.perf_counter()
            try:
                out.snapshots.append(self.snapshots.take(msg.frame_index, msg.timestamp, msg.rgb))
                stages["snapshot"] = time.perf_counter() - t_snap
            except Exception as exc:  # the frame is stored all the same; the picture is counted as missing
                out.faults.append(("snapshot", f"snapshot: frame {msg.frame_index}: {type(exc).__name__}: {exc}"[:500]))
        out.timings.append((msg.timestamp, stages))
        return res.tokens
