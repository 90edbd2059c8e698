"""One camera's worker: Kafka frames -> sampler, encoder, policy, sliding window -> the token cache.

:class:`CameraWorker` is a plain class (the Ray actor is a thin shell around it), so tests drive it
directly. It opens no connection in ``__init__``; :meth:`start` does.

What each record of a batch becomes (a gap, a dead letter, a skip record, a replay, a repair, a new frame)
is decided by :class:`actors.camera_batch.CameraHandler`, over one :class:`~actors.camera_batch.Ledger` of
where the camera's frames stand; this worker polls, writes what it decided, sends the dead letters,
commits, and recovers.

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

Size: over 300 lines by its docstrings (the delivery contract above is the module's point); the code, the
consumer loop alone (what a record becomes is :mod:`actors.camera_batch`), is under 300.
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
from streamdycoke.stats import StageTimes

from .backoff import Backoff
from .camera_batch import MAX_CLOCK_SKEW_S, CameraHandler, Counts, Ledger, parse_meta
from .camera_topic import IDLE_CHECK_S, CameraTopic
from .config import CameraConfig, KafkaSettings
from .snapshots import SnapshotTaker
from .topics import ensure_topic

__all__ = ["CAMERA_STAGES", "MAX_CLOCK_SKEW_S", "CameraCounters", "CameraWorker"]

log = logging.getLogger(__name__)

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
class CameraCounters(Counts):
    """A camera's counts (:class:`~actors.camera_batch.Counts`), and its stage times."""

    # per processed frame, seconds by stage (:data:`CAMERA_STAGES`): the last 10,000 for percentiles
    times: StageTimes = field(default_factory=StageTimes)

    def percentile_ms(self, q: float, stage: str = "frame_to_cache") -> float | None:
        return self.times.percentile_ms(stage, q)


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
        self.ledger = Ledger()  # where the camera's frames stand (consumed, counted, stored, to repair)
        # told the capture time of each frame the sampler cut on, once its batch is durable (standing queries)
        self.on_cut: Callable[[float], None] | None = None
        # a JPEG of a processed frame about once a second, written after the batch's segments (the console,
        # alerts' evidence); only where the store keeps them (the Redis cache)
        self.snapshots = (SnapshotTaker(camera.snapshot)
                          if camera.snapshot is not None and hasattr(store, "put_snapshots") else None)
        self.handler = CameraHandler(camera.id, self.topic, self.snapshots)

    @property
    def frames_missing(self) -> int:
        """Frames a gap left out for good (expired or lost with a broker's data)."""
        return self.ledger.frames_missing

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

        cam, kafka, led = self.camera, self.kafka, self.ledger
        try:
            # the actor may start before its camera's ingest: create the topic rather than assigning a
            # partition that does not exist yet (the broker would auto-create it with its own partitioning)
            ensure_topic(kafka, self.topic)
            ensure_topic(kafka, kafka.dead_letter_topic)
            committed = self.reader.open()
            meta = (committed.metadata or "") if committed is not None else ""
            self._producer = KafkaProducer(**kafka.client_kwargs(), acks="all", max_request_size=kafka.max_message_bytes)
            state = None
            newest = self.store.newest_timestamp(cam.id)
            if newest is not None:  # the window as stored: from the last keyframe on
                state = StreamState.from_segments(cam.id, self.store.read(cam.id, start=newest))
                led.last_ts = max(led.last_ts, newest)
            if self._encoder is None:
                self._encoder = build_encoder(self.config.encoder)
            self.pipeline = build_pipeline(cam.id, self.config, state=state, encoder=self._encoder)
            if self.snapshots is not None:  # a batch that failed took snapshots it never stored: take the next one
                self.snapshots.last_ts = None
            stored = self.pipeline.state.last_frame_index
            counted, meta_stored = parse_meta(meta)
            if counted is None and committed is not None and committed.offset > 0:
                counted, _ = parse_meta(self.reader.index_before(committed.offset))  # a broker that keeps no metadata
            if counted is not None:
                led.counted_through = max(led.counted_through, counted)
            led.last_index = max(counted, stored) if counted is not None else (stored if stored >= 0 else None)
            # what this camera stored (this process's own writes; the commit metadata's, across a restart of the
            # process) against what the cache holds: more means the cache lost acknowledged frames
            last = self.store.last_frame_index(cam.id)
            cache_last = -1 if last is None else last
            # (a repair a fault interrupted still owes its frames: a broker that keeps no commit metadata would
            # otherwise forget them, as the cache's own count does once the restart reset it)
            owed = -1 if led.repair_through is None else led.repair_through
            wrote = max(led.stored_through, owed, -1 if meta_stored is None else meta_stored)
            led.stored_through = cache_last  # what the next write expects the cache to hold
            led.repair_through, led.repair_done = None, False
            if wrote > cache_last:  # re-read the topic from there and store the lost frames again
                led.repair_through = wrote
                self.reader.seek_after(newest)
                if not led.loss_counted:  # unless the write that found it counted it already
                    self.faults["cache_lost"] += 1
                led.loss_counted = True
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
        led = self.ledger
        last_index_before = led.last_index
        try:
            out = self.handler.decide(batch, self.pipeline, led, self._polled_at)
        except Exception as exc:  # not the record's fault (records fail one by one, inside): a bug or OOM
            led.last_index = last_index_before
            self.fault("pipeline", exc)
            raise
        for kind, message in out.faults:  # counted at once, and said: none is silent
            self.faults[kind] += 1
            self.last_fault = message
            log.warning("camera %s: %s", self.camera.id, message)
        try:
            t_write = time.time()
            if out.segments:  # the cache must still hold what this worker last stored: else it lost frames
                self.store.append_many(out.segments, expect_last=led.stored_through)
                led.stored_through = max(led.stored_through, max(s.frame_index for s in out.segments))
            if out.snapshots:  # after the segments: a snapshot's frame is always readable
                self.store.put_snapshots(self.camera.id, out.snapshots)
            if out.live is not None:  # the newest processed frame, whole: the now frame every reader is given
                self.store.put_live(out.live)
            t_cached = time.time()
        except CacheLostError as exc:  # found at once, not at some later restart: the restart repairs it
            led.last_index = last_index_before
            led.loss_counted = True  # the repair after the restart does not count it again
            self.fault("cache_lost", exc)
            raise
        except Exception as exc:
            led.last_index = last_index_before
            self.fault("cache", exc)
            raise
        try:
            # dead letters are durable before the offset moves past them; a failed send raises here
            sent = [self._send_dead_letter(rec, reason, detail) for rec, reason, detail in out.dead_letters]
            self._producer.flush()
            for fut in sent:
                fut.get(timeout=10)
            offset = out.reread_from if out.reread_from is not None else self.reader.position()
            self.reader.commit(offset, led.meta())
            t_committed = time.time()
            if out.reread_from is not None:  # re-read from the start: replays are skipped, the missing frames found
                self.reader.seek_to_beginning()
        except Exception as exc:
            led.last_index = last_index_before
            self.fault("broker", exc)
            raise
        # the batch is durable: now it counts, and its scene cuts trigger what asks on them
        self.counters.add(out.counts)
        self._repair_progress(out.counts)
        if self.on_cut is not None:
            for ts in out.cuts:
                self.on_cut(ts)
        led.committed()
        times = self.counters.times
        for capture_ts, stages in out.timings:
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

    def _repair_progress(self, counts: Counts) -> None:
        """Say how a repair of frames the cache lost goes, and end it (counting what the topic no longer held)."""
        led = self.ledger
        if led.repair_through is None or not (counts.repaired or led.repair_done):
            return
        self.last_fault = (f"cache_lost: {self.counters.repaired} frames the cache had lost (up to frame "
                           f"{led.repair_through}) stored again from {self.topic}")
        if led.repair_done:
            missing = led.repair_through - self.pipeline.state.last_frame_index
            if missing > 0:  # the topic no longer held them (past its retention): counted, not silent
                self.faults["gap"] += 1
                led.frames_missing += missing
                self.last_fault += f"; frames after {self.pipeline.state.last_frame_index} were not in the topic"
            led.repair_through, led.repair_done, led.loss_counted = None, False, False
        log.warning("camera %s: %s", self.camera.id, self.last_fault)

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

    def _send_dead_letter(self, rec, reason: str, detail: str):
        """Send a record to the dead-letter topic: its original bytes, untouched (so it can be inspected and
        replayed), the reason in headers. Returns the send's future."""
        log.warning("camera %s: offset %d dead-lettered: %s", self.camera.id, rec.offset, detail)
        headers = [("reason", reason.encode()), ("detail", detail.encode()[:1000]), ("camera", self.camera.id.encode()),
                   ("topic", self.topic.encode()), ("offset", str(rec.offset).encode())]
        return self._producer.send(self.kafka.dead_letter_topic, key=self.camera.id.encode(), value=rec.value,
                                   headers=headers)
