"""One camera's worker: Kafka frames -> sampler, encoder, policy, sliding window -> the token cache.

:class:`CameraWorker` is a plain class (the Ray actor is a thin shell around it), so tests drive it
directly. It opens no connection in ``__init__``; :meth:`start` does.

Delivery: at least once, made exactly-once in effect. The worker consumes its camera's topic by
manual partition assignment (no consumer-group rebalancing) and commits the Kafka offset only after
the batch's segments are in Redis. Writes are idempotent on (camera, frame index), and a restarted
worker rebuilds its sliding window from the cache (:meth:`StreamState.from_segments`) and skips the
frames the cache already holds, so a replay loses nothing and stores nothing twice.

Each batch is a transaction: its frames are decided, their segments written, its dead letters
acknowledged, and only then is the offset committed and are the counters moved. If anything in it
fails (Redis down, the broker gone), nothing of it counts: the worker closes its clients and, when
started again, rebuilds its window from what the cache durably holds and resumes from the committed
offset, so it never moves past a frame it has not stored and never counts a frame twice.

Edge sampling: ingest may run the camera's frame sampler and send only the frames it chooses; a message
then says how many frames just before it were skipped there (and a skip record, with no pixels, stands
for skipped frames alone), so every ingested frame is still consumed exactly once as processed, skipped
or dead-lettered, frame indices stay contiguous for gap detection, and a frame chosen at the edge is
processed without sampling again.

Bad input never stops the stream: a message that does not parse, has the wrong size, belongs to
another camera, carries a timestamp from the future, or fails in the pipeline goes to the dead-letter
topic, its original bytes with the reason in headers (``reason``, ``detail``, ``camera``, ``topic``,
``offset``), and is counted.

Faults are never silent: each is counted by kind (``cache``, ``broker``, ``topic_reset``, ``stall``,
``start``, ``gap``, ``cache_lost``) and shows in :meth:`CameraWorker.health`.

A cache that lost acknowledged frames (a Redis failover before replication, a restart without
persistence) is found by the next write (each says what this camera last stored, and the cache refuses
it if it holds less) or at start (the highest frame this process stored, or across a process restart the
commit metadata's ``"<consumed>:<stored>"``, above the cache's highest). Either is one ``cache_lost``
fault; the worker re-reads the topic from just before the newest frame the cache still holds (looked up
by time, else from the start) and stores the lost frames again, counted as ``repaired`` (not again as
consumed); records it had accounted for otherwise are replays. Lost frames the topic no longer holds are
a counted ``gap``.

Ingest numbers a camera's frames without gaps, so the worker tracks the last frame index it consumed (committed with the offset, as its
metadata) and a frame further ahead is a gap: the topic was recreated under it (a broker that lost
its data; the old position may still be in range of the new topic) or frames expired before they were
read. It re-reads the topic from its start once, counted as ``topic_reset`` (frames the cache holds are
skipped as replays, the missing ones found); a gap that remains is counted as ``gap`` with the frames
missing. A consumer whose position fell out of range is reset to the topic's start and counted too;
a consumer that receives nothing while its topic holds unread frames is a stall, counted and recovered.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from streamdycoke import CacheLostError, EncoderSpec, StreamState, TokenStore, build_pipeline
from streamdycoke.encoders import Encoder
from streamdycoke.sampler import SamplerDecision
from streamdycoke.stats import StageTimes

from .config import CameraConfig, KafkaSettings
from .camera_topic import IDLE_CHECK_S, CameraTopic
from .frames import FrameFormatError, decode_frame, peek_indices
from .backoff import Backoff
from .snapshots import SnapshotTaker
from .topics import ensure_topic

__all__ = ["CAMERA_STAGES", "MAX_CLOCK_SKEW_S", "CameraCounters", "CameraWorker"]

log = logging.getLogger(__name__)

# A frame stamped further ahead of this machine's clock is poison (ingest stamps with its own wall
# clock): one such stamp would make every older frame look expired to the cache's retention.
MAX_CLOCK_SKEW_S = 300.0

# What a processed frame's time goes to on the camera's side, in order (seconds; the ingest side's stages
# are in :mod:`actors.ingest`):
#   transit         the record's Kafka timestamp (set by ingest's producer at send) to this worker's poll
#   wait            the poll returned to this frame's turn in its batch
#   encode          the vision encoder
#   compress        the streaming compressor (policy, window, segment)
#   snapshot        the frame's JPEG snapshot (only frames that get one, about one a second: actors.snapshots)
#   cache_write     the batch's write to the token cache (every frame of a batch waits for all of it)
#   commit          the Kafka offset commit after the write (not part of frame_to_cache: the frame is
#                   already readable; a failed commit replays the batch, which the cache skips)
#   frame_to_cache  capture timestamp to the end of the cache write: the end-to-end figure
CAMERA_STAGES = ("transit", "wait", "encode", "compress", "snapshot", "cache_write", "commit", "frame_to_cache")


@dataclass
class CameraCounters:
    """Every frame consumed is exactly one of processed, skipped (sampler) or dead-lettered."""

    consumed: int = 0
    processed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    replayed: int = 0  # already in the cache (a replay after a restart): neither stored nor counted again
    repaired: int = 0  # counted before, then lost by the cache (a failover, a restart without persistence): stored again
    tokens_in: int = 0
    tokens_kept: int = 0
    # per processed frame, seconds by stage (:data:`CAMERA_STAGES`): the last 10,000 for percentiles
    times: StageTimes = field(default_factory=StageTimes)

    def add(self, other: "CameraCounters") -> None:
        """Add a committed batch's counts."""
        for name in ("consumed", "processed", "skipped", "dead_lettered", "replayed", "repaired", "tokens_in",
                     "tokens_kept"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def percentile_ms(self, q: float, stage: str = "frame_to_cache") -> float | None:
        return self.times.percentile_ms(stage, q)


def _parse_meta(meta: str) -> tuple[int | None, int | None]:
    """The commit metadata ``"<last frame index consumed>:<highest frame index stored>"`` (older commits: the
    first alone) -> the two numbers, None where absent or unreadable."""
    counted, _, stored = (meta or "").partition(":")
    num = lambda t: int(t) if t.lstrip("-").isdigit() else None  # noqa: E731
    return num(counted), num(stored)


class CameraWorker:
    """One camera's consumer, per-frame pipeline and token-cache writer.

    Args:
        camera: the camera.
        kafka: the broker and topics.
        store: the token cache (any :class:`~streamdycoke.TokenStore`; Redis in the pipeline).
        app_model: the application's LLM, whose vision tower the camera uses unless it names its own encoder.
        stall_after_s: a consumer that receives nothing this long while its topic holds unread frames
            is stalled: it is counted and recovered.
        encoder: the encoder to use (e.g. :class:`actors.encoder_client.RemoteEncoder`); None loads the
            camera's own on the first start.
    """

    def __init__(self, camera: CameraConfig, kafka: KafkaSettings, store: TokenStore,
                 app_model: EncoderSpec | None = None, stall_after_s: float = 10.0, encoder: Encoder | None = None) -> None:
        self.camera = camera
        self.kafka = kafka
        self.store = store
        self.config = camera.pipeline_config(app_model)
        self.stall_after_s = stall_after_s
        self.counters = CameraCounters()
        self.faults: Counter[str] = Counter()
        self.last_fault: str | None = None
        self.topic = kafka.topic_for(camera.id)
        self.reader = CameraTopic(camera.id, self.topic, kafka)  # the consumer, its position and fetch deadline
        self._producer = self.pipeline = None
        self._encoder = encoder  # loaded once (unless given: e.g. the app's encoder service); a recovery reuses it
        self._last_progress = time.monotonic()
        self._polled_at = 0.0
        self._last_index: int | None = None  # highest frame index consumed (committed as offset metadata)
        self._last_ts = 0.0  # capture time of the last frame decided (a replay is never newer than it)
        self._reread_for: int | None = None  # the expected index we re-read the topic from its start for
        self.frames_missing = 0  # frames a gap left out for good (expired or lost with a broker's data)
        # highest frame index the counters account for (moved at each commit; at start, the committed one): a
        # replay above it was written by a batch whose commit failed, so it is stored but was never counted
        self._counted_through = -1
        # told the capture time of each frame the sampler cut on, once its batch is durable (standing queries)
        self.on_cut: Callable[[float], None] | None = None
        self._cuts: list[float] = []
        # a JPEG of a processed frame about once a second, written after the batch's segments (the console,
        # alerts' evidence); only where the store keeps them (the Redis cache)
        self.snapshots = (SnapshotTaker(camera.snapshot)
                          if camera.snapshot is not None and hasattr(store, "put_snapshots") else None)
        self._snaps: list[tuple[int, float, bytes]] = []
        # frames up to this index were counted but the cache no longer holds them (set at start): re-stored as
        # they are read again, counted as repaired, not again as consumed
        self._repair_through: int | None = None
        self._loss_counted = False  # this loss's fault is counted (found by a write, or at start)
        self._repair_done = False  # a frame past _repair_through was read: the repair ends with this batch
        self._stored_through = -1  # the highest frame index this camera stored (this process)

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self.pipeline is not None

    def start(self) -> None:
        """Connect, rebuild the window from the cache, and resume from the committed offset.

        On failure everything opened is closed again (a retry leaks nothing), the fault is recorded
        (once per distinct error while it repeats) and the error is raised.
        """
        from kafka import KafkaProducer

        from streamdycoke import build_encoder

        cam, kafka = self.camera, self.kafka
        try:
            # the actor may start before its camera's ingest: create the topic rather than assigning a
            # partition that does not exist yet (the broker would auto-create it with its own partitioning)
            ensure_topic(kafka, self.topic)
            ensure_topic(kafka, kafka.dead_letter_topic)
            committed = self.reader.open()
            meta = (committed.metadata or "") if committed is not None else ""
            self._producer = KafkaProducer(**kafka.client_kwargs(), acks="all", max_request_size=kafka.max_message_bytes)
            self._pending_dead_letters: list = []
            state = None
            newest = self.store.newest_timestamp(cam.id)
            if newest is not None:  # the window as stored: from the last keyframe on
                state = StreamState.from_segments(cam.id, self.store.read(cam.id, start=newest))
                self._last_ts = max(self._last_ts, newest)
            if self._encoder is None:
                self._encoder = build_encoder(self.config.encoder)
            self.pipeline = build_pipeline(cam.id, self.config, state=state, encoder=self._encoder)
            if self.snapshots is not None:  # a batch that failed took snapshots it never stored: take the next one
                self.snapshots.last_ts = None
            stored = self.pipeline.state.last_frame_index
            counted, meta_stored = _parse_meta(meta)
            if counted is None and committed is not None and committed.offset > 0:
                counted, _ = _parse_meta(self.reader.index_before(committed.offset))  # a broker that keeps no metadata
            if counted is not None:
                self._counted_through = max(self._counted_through, counted)
            self._last_index = max(counted, stored) if counted is not None else (stored if stored >= 0 else None)
            # what this camera stored (this process's own writes; the commit metadata's, across a restart of the
            # process) against what the cache holds: more means the cache lost acknowledged frames
            last = self.store.last_frame_index(cam.id)
            cache_last = -1 if last is None else last
            wrote = max(self._stored_through, -1 if meta_stored is None else meta_stored)
            self._stored_through = cache_last  # what the next write expects the cache to hold
            self._repair_through, self._repair_done = None, False
            if wrote > cache_last:  # re-read the topic from there and store the lost frames again
                self._repair_through = wrote
                self.reader.seek_after(newest)
                if not self._loss_counted:  # unless the write that found it counted it already
                    self.faults["cache_lost"] += 1
                self._loss_counted = True
                self.last_fault = (f"cache_lost: the cache holds frames up to {cache_last}, this camera had stored "
                                   f"up to {wrote}; re-reading {self.topic} to store them again")
                log.warning("camera %s: %s", cam.id, self.last_fault)
        except Exception as exc:
            self.stop()
            if self.last_fault != self._message("start", exc):  # one count per outage, not per retry
                self.fault("start", exc)
            raise
        except BaseException:
            self.stop()
            raise
        # what start-up allocated (the model, clients, Ray's own objects) lives as long as the process: keep it
        # out of the collector's full passes, which otherwise stall the stream for tens of milliseconds
        gc.collect()
        gc.freeze()
        self._last_progress = time.monotonic()

    def stop(self) -> None:
        """Close the clients (idempotent). What was not committed is read again by the next start."""
        self.reader.close()
        if self._producer is not None:
            try:
                self._producer.close()
            except Exception:  # closing a client of a dead broker: nothing more to do
                log.debug("camera %s: close failed", self.camera.id, exc_info=True)
        self._producer = self.pipeline = None

    @staticmethod
    def _message(kind: str, exc: BaseException | str) -> str:
        detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        return f"{kind}: {detail}"[:500]

    def fault(self, kind: str, exc: BaseException | str) -> None:
        """Count a fault, say it once per distinct error, and close the clients (the next start recovers)."""
        self.faults[kind] += 1
        message = self._message(kind, exc)
        if message != self.last_fault:
            log.warning("camera %s: %s; recovering from the cache and the committed offset", self.camera.id, message)
        self.last_fault = message
        self.stop()

    def health(self) -> dict:
        """``status`` (``ok`` or ``recovering``), faults by kind and the last one."""
        return {"status": "ok" if self.started else "recovering", "faults": dict(self.faults),
                "last_fault": self.last_fault, "frames_missing": self.frames_missing}

    # -- work --------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, every: Callable[[], None] | None = None, every_s: float = 0.5,
            max_backoff_s: float = 5.0) -> None:
        """Start and :meth:`step` until ``stop``, recovering from faults by itself; close on the way out.

        A fault (Redis or the broker unreachable, a stall) is recorded by :meth:`step` or :meth:`start`,
        which close the clients; this loop waits (exponential backoff up to ``max_backoff_s``) and starts
        again, which resumes from the cache and the committed offset. ``every`` (e.g. publishing metrics)
        runs every ``every_s`` seconds, faults or not.
        """
        last_every, backoff = 0.0, Backoff(0.1, max_backoff_s)
        try:
            while not stop.is_set():
                try:
                    if not self.started:
                        self.start()
                    # no sleep between polls: an idle poll already waits (up to 200 ms) for the next frame,
                    # and returns as soon as the broker hands one over
                    self.step(timeout_ms=200)
                    backoff.succeeded()
                except Exception:  # recorded (and logged once) by step/start
                    stop.wait(backoff.failed())
                if every is not None and time.monotonic() - last_every > every_s:
                    every()
                    last_every = time.monotonic()
        finally:
            if every is not None:
                every()
            self.stop()

    def lag(self, fresh: bool = True) -> int:
        """Frames in the camera's topic not yet consumed (:meth:`CameraTopic.lag`)."""
        return self.reader.lag(fresh)

    def step(self, timeout_ms: int = 200) -> int:
        """Consume at most one bounded batch, store its segments, then commit. Returns frames consumed.

        Raises on a fault after recording it (:meth:`fault`): the caller waits and calls :meth:`start`.
        """
        if not self.started:
            raise RuntimeError("camera worker is not started")
        try:
            before, batch = self.reader.poll(timeout_ms, self.kafka.max_poll_records)
            self._polled_at = time.time()
        except Exception as exc:
            self.fault("broker", exc)
            raise
        if batch and batch[0].offset < before:  # out of range, reset to the start: the topic was recreated
            self.faults["topic_reset"] += 1
            self.last_fault = (f"topic_reset: {self.topic} restarted at offset {batch[0].offset} below our position "
                               f"{before}; frames the cache holds are skipped as replays")
            log.warning("camera %s: %s", self.camera.id, self.last_fault)
        if not batch:
            self._check_idle()
            return 0
        state_before = self.pipeline.state.last_frame_index
        delta = CameraCounters()
        last_index_before = self._last_index
        try:
            segments, timings, gap_offset = self._decide(batch, delta)
        except Exception as exc:  # not the record's fault (records fail one by one, inside): a bug or OOM
            self._last_index = last_index_before
            self.fault("pipeline", exc)
            raise
        try:
            t_write = time.time()
            if segments:  # the cache must still hold what this worker last stored: else it lost frames
                self.store.append_many(segments, expect_last=self._stored_through)
                self._stored_through = max(self._stored_through, max(s.frame_index for s in segments))
            if self._snaps:  # after the segments: a snapshot's frame is always readable
                self.store.put_snapshots(self.camera.id, self._snaps)
            if self._live is not None:  # the newest frame in, whole: the now frame every reader is given
                self.store.put_live(self._live)
            t_cached = time.time()
        except CacheLostError as exc:  # found at once, not at some later restart: the restart repairs it
            self._last_index = last_index_before
            self._loss_counted = True  # the repair after the restart does not count it again
            self.fault("cache_lost", exc)
            raise
        except Exception as exc:
            self._last_index = last_index_before
            self.fault("cache", exc)
            raise
        try:
            # dead letters are durable before the offset moves past them; a failed send raises here
            self._producer.flush()
            for fut in self._pending_dead_letters:
                fut.get(timeout=10)
            self._pending_dead_letters.clear()
            offset = gap_offset if gap_offset is not None else self.reader.position()
            self.reader.commit(offset, f"{self._last_index}:{self._stored_through}")
            t_committed = time.time()
            if gap_offset is not None:  # re-read from the start: replays are skipped, the missing frames found
                self.reader.seek_to_beginning()
        except Exception as exc:
            self._last_index = last_index_before
            self.fault("broker", exc)
            raise
        # the batch is durable: now it counts, and its scene cuts trigger what asks on them
        self.counters.add(delta)
        if self._repair_through is not None and (delta.repaired or self._repair_done):
            self.last_fault = (f"cache_lost: {self.counters.repaired} frames the cache had lost (up to frame "
                               f"{self._repair_through}) stored again from {self.topic}")
            if self._repair_done:
                missing = self._repair_through - self.pipeline.state.last_frame_index
                if missing > 0:  # the topic no longer held them (past its retention): counted, not silent
                    self.faults["gap"] += 1
                    self.frames_missing += missing
                    self.last_fault += f"; frames after {self.pipeline.state.last_frame_index} were not in the topic"
                self._repair_through, self._repair_done, self._loss_counted = None, False, False
            log.warning("camera %s: %s", self.camera.id, self.last_fault)
        if self.on_cut is not None:
            for ts in self._cuts:
                self.on_cut(ts)
        if self._last_index is not None:
            self._counted_through = max(self._counted_through, self._last_index)
        times = self.counters.times
        for capture_ts, stages in timings:
            for stage, seconds in stages.items():
                times.add(stage, seconds)
            times.add("cache_write", t_cached - t_write)
            times.add("commit", t_committed - t_cached)
            times.add("frame_to_cache", t_cached - capture_ts)
        self._last_progress = time.monotonic()
        try:
            self.reader.relax()
        except Exception:  # the batch is committed; a failed look at the client's state changes nothing
            log.debug("camera %s: fetch deadline not relaxed", self.camera.id, exc_info=True)
        log.debug("camera %s: batch of %d committed (frames %d..%d)", self.camera.id, len(batch), state_before,
                  self.pipeline.state.last_frame_index)
        return len(batch)

    def _decide(self, batch: list, c: CameraCounters) -> tuple[list, list[tuple[float, dict]], int | None]:
        """Run a batch's records through the pipeline, dead-lettering poison ones; counts go to ``c``.

        Returns the segments; per segment, its capture time and its stage times so far (seconds: transit,
        wait, encode, compress); and the offset of a record whose index leaves a gap the first time it is
        seen (the batch stops there; the caller re-reads the topic from its start), else None.
        """
        segments, timings = [], []
        self._cuts, self._snaps, self._live = [], [], None
        newest = None  # (message, its tokens when processed) of the newest frame in with pixels
        state = self.pipeline.state
        stored_before = state.last_frame_index  # the newest frame stored before this batch
        polled = self._polled_at
        for rec in batch:
            span = peek_indices(rec.value)  # (first, last) frame index the message accounts for
            first, index = span if span is not None else (None, None)
            expected = None if self._last_index is None else self._last_index + 1
            if first is not None and expected is not None and first > expected:
                if self._reread_for != expected:  # first sight: the topic may have been recreated under us
                    self._reread_for = expected
                    self.faults["topic_reset"] += 1
                    self.last_fault = (f"topic_reset: frame {first} at offset {rec.offset} follows frame "
                                       f"{self._last_index}; re-reading {self.topic} from its start")
                    log.warning("camera %s: %s", self.camera.id, self.last_fault)
                    return segments, timings, rec.offset
                self.faults["gap"] += 1  # re-read, still missing: expired or lost with the broker's data
                self.frames_missing += first - expected
                self.last_fault = f"gap: frames {expected}..{first - 1} are not in {self.topic}; going on"
                log.warning("camera %s: %s", self.camera.id, self.last_fault)
            is_new = index is None or self._last_index is None or index > self._last_index
            if index is not None and (self._last_index is None or index > self._last_index):
                self._last_index = index
            try:
                msg = decode_frame(rec.value)
                if msg.camera != self.camera.id:
                    raise FrameFormatError("unknown_camera", f"message for camera {msg.camera!r} on {self.topic}")
                if msg.timestamp > time.time() + MAX_CLOCK_SKEW_S:
                    raise FrameFormatError("timestamp_in_future",
                                           f"captured at {msg.timestamp:.3f}, more than {MAX_CLOCK_SKEW_S:.0f} s "
                                           "ahead of this machine's clock")
                if is_new and expected is not None and first is not None and first < expected:
                    raise FrameFormatError("bad_skip_count",
                                           f"frame {index} claims {msg.skipped_before} skipped frames before it, "
                                           f"back to {first}, but frames up to {expected - 1} are already accounted for")
            except FrameFormatError as exc:
                if not is_new:  # read again by a repair: dead-lettered and counted the first time
                    c.replayed += 1
                    continue
                c.consumed += 1
                self._dead_letter(rec, exc.reason, str(exc), c)
                continue
            if msg.rgb is None:  # a skip record: frames ingest's sampler skipped
                if is_new:
                    c.consumed += msg.frames
                    c.skipped += msg.frames
                    self._last_ts = max(self._last_ts, msg.timestamp)
                else:
                    c.replayed += msg.frames
                continue
            if msg.frame_index <= state.last_frame_index:
                if msg.timestamp > self._last_ts:  # not a replay: a restarted producer reused the index
                    self.faults["index_reused"] += 1
                    self.frames_missing += 1
                    self.last_fault = (f"index_reused: frame {msg.frame_index} at offset {rec.offset} is newer than "
                                       "the stored frame of that index; it cannot be stored")
                    log.warning("camera %s: %s", self.camera.id, self.last_fault)
                    c.consumed += msg.frames
                    c.skipped += msg.skipped_before
                    self._dead_letter(rec, "index_reused", self.last_fault, c)
                    continue
                if self._counted_through < msg.frame_index <= stored_before:  # stored by a batch whose commit failed
                    c.consumed += msg.frames
                    c.skipped += msg.skipped_before
                    c.processed += 1
                else:
                    c.replayed += msg.frames  # a replay of a frame the cache already holds, counted before
                continue
            if not is_new:  # read again by a repair: accounted for before
                if self._repair_through is not None and msg.frame_index <= self._repair_through:
                    # stored before the cache lost it: stored again, through the same pipeline, not counted again
                    decision = SamplerDecision(True, msg.pixel_change, msg.scene_cut) if msg.sampled else None
                    try:
                        out = self.pipeline.push(msg.rgb, msg.frame_index, msg.timestamp, decision=decision)
                    except ValueError:  # dead-lettered the first time: it stays so
                        out = None
                    if out is not None and out.segment is not None:
                        c.repaired += 1
                        segments.append(out.segment)
                        continue
                c.replayed += msg.frames
                continue
            if self._repair_through is not None:  # past what the cache had lost: the repair is done
                self._repair_done = True
            c.consumed += msg.frames
            c.skipped += msg.skipped_before  # skipped by ingest's sampler, accounted for by this frame
            self._last_ts = max(self._last_ts, msg.timestamp)
            decision = SamplerDecision(True, msg.pixel_change, msg.scene_cut) if msg.sampled else None
            started = time.time()
            try:
                out = self.pipeline.push(msg.rgb, msg.frame_index, msg.timestamp, decision=decision, keep_tokens=True)
            except ValueError as exc:  # e.g. a frame too small for the sampler
                self._dead_letter(rec, "bad_frame", str(exc), c)
                continue
            newest = (msg, out.tokens)
            if out.scene_cut:
                self._cuts.append(msg.timestamp)
            if out.segment is None:
                c.skipped += 1
                continue
            c.processed += 1
            c.tokens_in += out.segment.num_positions
            c.tokens_kept += out.segment.num_kept
            segments.append(out.segment)
            stages = {"transit": max(0.0, polled - rec.timestamp / 1e3), "wait": started - polled,
                      "encode": out.encode_s, "compress": out.compress_s}
            if self.snapshots is not None and self.snapshots.due(msg.timestamp):
                t_snap = time.perf_counter()
                try:
                    self._snaps.append(self.snapshots.take(msg.frame_index, msg.timestamp, msg.rgb))
                    stages["snapshot"] = time.perf_counter() - t_snap
                except Exception as exc:  # the frame is stored all the same; the picture is counted as missing
                    self.faults["snapshot"] += 1
                    self.last_fault = f"snapshot: frame {msg.frame_index}: {type(exc).__name__}: {exc}"[:500]
                    log.warning("camera %s: %s", self.camera.id, self.last_fault)
            timings.append((msg.timestamp, stages))
        self._live = self._live_frame(newest)
        return segments, timings, None

    def _live_frame(self, newest):
        """The batch's newest frame in, whole (encoded here if the sampler skipped it), or None."""
        if newest is None:
            return None
        msg, tokens = newest
        return self.pipeline.live_segment(msg.rgb, msg.frame_index, msg.timestamp, tokens)

    def _check_idle(self) -> None:
        """Nothing arrived: is the topic gone or shrunk, are frames waiting that fetches do not bring (a
        longer fetch deadline, :meth:`CameraTopic.adapt`), or are we stalled while it grows?"""
        if time.monotonic() - self._last_progress < min(IDLE_CHECK_S, self.stall_after_s):
            return
        try:
            lag = self.lag()
        except Exception as exc:
            self.fault("broker", exc)
            raise
        if lag > 0 and time.monotonic() - self._last_progress > self.stall_after_s:
            self.fault("stall", f"nothing received for {self.stall_after_s:.0f} s while {lag} frames wait "
                                f"(fetch deadline {self.reader.fetch_max_wait_ms} ms)")
            raise RuntimeError(self.last_fault)
        self.reader.adapt(lag)
        if lag <= 0:  # nothing waits (a broker may report its end loosely: tansu's can trail the true end)
            self._last_progress = time.monotonic()

    def _dead_letter(self, rec, reason: str, detail: str, c: CameraCounters) -> None:
        c.dead_lettered += 1
        log.warning("camera %s: offset %d dead-lettered: %s", self.camera.id, rec.offset, detail)
        headers = [("reason", reason.encode()), ("detail", detail.encode()[:1000]), ("camera", self.camera.id.encode()),
                   ("topic", self.topic.encode()), ("offset", str(rec.offset).encode())]
        # the original bytes, untouched, so the record can be inspected and replayed
        self._pending_dead_letters.append(
            self._producer.send(self.kafka.dead_letter_topic, key=self.camera.id.encode(), value=rec.value, headers=headers)
        )
