"""``streamdycoke ingest``: camera source -> decoded, resized frames -> Kafka, one topic per camera.

Per-camera order is Kafka's: each camera has its own single-partition topic ``{prefix}{camera}``, so
its frames are consumed in the order they were produced. A file can loop (timestamps keep growing)
and can be paced by its timestamps like a live source; a live source (RTSP, HTTP) that drops is
reopened with exponential backoff, frame indices continuing where they were.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from streamdycoke.video import DecodeStats, decode_frames

from .config import CameraConfig, IngestSettings, KafkaSettings
from .frames import FrameFormatError, decode_frame, encode_frame
from .metrics import IngestMetrics
from .topics import ensure_topic

__all__ = ["IngestFleet", "IngestStats", "Ingestor", "shard_of"]

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    frames: int = 0  # published: acknowledged by the broker
    corrupt_packets: int = 0
    reconnects: int = 0
    send_failures: int = 0  # sends that failed and were retried (never counted as published)


class Ingestor:
    """Publishes one camera's frames. Opens nothing until :meth:`run`."""

    def __init__(self, camera: str, source: str, kafka: KafkaSettings | None = None,
                 settings: IngestSettings | None = None, metrics: IngestMetrics | None = None) -> None:
        self.camera = camera
        self.source = source
        self.kafka = kafka or KafkaSettings()
        self.settings = settings or IngestSettings()
        self.stats = IngestStats()
        self.metrics = metrics
        self.topic = self.kafka.topic_for(camera)
        self._producer = None

    def run(self, stop: threading.Event | None = None) -> IngestStats:
        """Publish until the source ends (or ``max_frames``, or ``stop``). Returns this run's stats.

        Frame indices continue from the last one in the topic (a restarted ingest never reuses an
        index the camera's actor has already stored). Capture timestamps are the run's start time plus the
        source's own timestamps; a reopened source continues from the wall clock, a looped file from
        its previous pass, so they only grow.
        """
        s = self.settings
        stop = stop or threading.Event()
        if self.metrics is not None:
            self.metrics.camera_started(self.camera)
        ensure_topic(self.kafka, self.topic)
        first_index, last_ts = self._resume_point()
        t0_wall = max(time.time(), last_ts + 1.0 / 30)
        base = 0.0  # where (seconds after t0_wall) the current pass's first frame goes
        backoff = s.reconnect_backoff_s
        try:
            while not stop.is_set():
                first_ts = last_rel = None
                dec = DecodeStats()
                try:
                    for fr in decode_frames(self.source, size=(s.size, s.size), stats=dec,
                                            options=s.options, timeout=s.timeout_s):
                        if stop.is_set() or (s.max_frames is not None and self.stats.frames >= s.max_frames):
                            return self.stats
                        first_ts = fr.timestamp if first_ts is None else first_ts
                        last_rel = fr.timestamp - first_ts
                        ts = t0_wall + base + last_rel
                        if s.realtime:
                            delay = ts - time.time()
                            if delay > 0:
                                stop.wait(delay)
                        if not self._publish(encode_frame(self.camera, first_index + self.stats.frames, ts, fr.rgb),
                                             stop):
                            return self.stats  # stopped while the broker was unreachable
                        self.stats.frames += 1
                        if self.metrics is not None:
                            self.metrics.published(self.camera, ts)
                        backoff = s.reconnect_backoff_s
                except Exception as exc:  # a dropped or unreachable source: reopen with backoff
                    self.stats.corrupt_packets += dec.corrupt_packets
                    if self.metrics is not None:
                        self.metrics.source_failed(self.camera, dec.corrupt_packets)
                    if s.max_reconnects is not None and self.stats.reconnects >= s.max_reconnects:
                        raise
                    self.stats.reconnects += 1
                    log.warning("camera %s: source %s failed (%s); reopening in %.1fs", self.camera, self.source, exc, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, s.reconnect_backoff_max_s)
                    # a live source resumes at the wall clock: later than anything already published
                    base = max(base + (last_rel or 0.0) + 1.0 / 30, time.time() - t0_wall)
                    continue
                self.stats.corrupt_packets += dec.corrupt_packets
                if self.metrics is not None:
                    self.metrics.corrupt(self.camera, dec.corrupt_packets)
                if not s.loop:
                    break
                base += (last_rel or 0.0) + 1.0 / 30
        finally:
            self._close_producer()
        return self.stats

    def _publish(self, value: bytes, stop: threading.Event) -> bool:
        """Send one frame to partition 0 and wait for the broker's acknowledgement, so a frame counts as
        published only once it is durable and frames stay in order. A failed send is counted, the
        producer rebuilt (a producer can be left unusable, e.g. after a broker restart lost its
        producer id) and the same frame sent again, with backoff, until it succeeds or ``stop``."""
        backoff = self.settings.reconnect_backoff_s
        while not stop.is_set():
            try:
                if self._producer is None:
                    self._producer = self._new_producer()
                self._producer.send(self.topic, key=self.camera.encode(), value=value, partition=0).get(
                    timeout=self.settings.send_timeout_s)
                return True
            except Exception as exc:
                self.stats.send_failures += 1
                if self.metrics is not None:
                    self.metrics.send_failed(self.camera)
                log.warning("camera %s: send failed (%s: %s); rebuilding the producer and retrying in %.1fs",
                            self.camera, type(exc).__name__, exc, backoff)
                self._close_producer()
                stop.wait(backoff)
                backoff = min(2 * backoff, self.settings.reconnect_backoff_max_s)
        return False

    def _new_producer(self):
        from kafka import KafkaProducer

        ensure_topic(self.kafka, self.topic)  # a broker that lost its data lost the topic too
        return KafkaProducer(**self.kafka.client_kwargs(), acks="all", linger_ms=0,
                             max_request_size=self.kafka.max_message_bytes,
                             request_timeout_ms=int(1000 * self.settings.send_timeout_s))

    def _close_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:  # a producer of a dead broker: nothing more to do
                log.debug("camera %s: producer close failed", self.camera, exc_info=True)
            self._producer = None

    def _resume_point(self) -> tuple[int, float]:
        """One past the highest frame index already in the camera's topic (0 for a new topic), and
        the latest capture timestamp there (0.0 for a new topic).

        Read from the messages themselves, not from the end offset, and read on past the end offset
        until nothing more comes: a broker may report its end loosely (tansu's trails the true end,
        by many records with its object-store log), and trusting it would reuse indices the camera's
        actor already stored, which it would then drop as replays. Bounded: this camera's ingest is
        the only producer of its topic, and it is not running while this reads.
        """
        from kafka import KafkaConsumer, TopicPartition

        tp = TopicPartition(self.topic, 0)
        c = KafkaConsumer(**self.kafka.client_kwargs(), enable_auto_commit=False,
                          max_partition_fetch_bytes=self.kafka.max_message_bytes,
                          fetch_max_bytes=4 * self.kafka.max_message_bytes)
        try:
            c.assign([tp])
            end = c.end_offsets([tp])[tp]
            c.seek(tp, max(0, end - 64))
            last, last_ts, empty = -1, 0.0, 0
            while empty < 3:  # to the true end: three polls in a row with nothing (a loaded broker is slow)
                batch = c.poll(timeout_ms=1500).get(tp, [])
                empty = 0 if batch else empty + 1
                for rec in batch:
                    try:
                        msg = decode_frame(rec.value)
                    except FrameFormatError:  # a malformed message is the actor's to dead-letter
                        continue
                    last, last_ts = max(last, msg.frame_index), max(last_ts, msg.timestamp)
            return last + 1, last_ts
        finally:
            c.close()


def shard_of(camera: str, shards: int) -> int:
    """Which of ``shards`` ingest processes owns ``camera``: stable across processes and restarts."""
    import zlib

    return zlib.crc32(camera.encode()) % shards


class IngestFleet:
    """Runs one :class:`Ingestor` thread per camera with a source, reconciled against a camera list.

    ``reconcile(cameras)`` starts new cameras, stops removed ones and restarts changed ones; with
    ``shard=(k, n)`` this process takes only the cameras :func:`shard_of` gives to ``k``. A camera
    whose ingest gave up (source failing past ``max_reconnects``) is started again at the next
    reconcile; one whose source simply ended (a file, not looped) stays done.
    """

    def __init__(self, kafka: KafkaSettings, settings: IngestSettings, metrics: IngestMetrics | None = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        k, n = shard
        if not (n >= 1 and 0 <= k < n):
            raise ValueError(f"shard must be K/N with 0 <= K < N, got {k}/{n}")
        self.kafka, self.settings, self.metrics, self.shard = kafka, settings, metrics, shard
        self._running: dict[str, tuple[object, Ingestor, threading.Event, threading.Thread]] = {}
        self._failed: set[str] = set()

    def owns(self, camera: str) -> bool:
        return shard_of(camera, self.shard[1]) == self.shard[0]

    def reconcile(self, cameras: list[CameraConfig]) -> dict[str, list[str]]:
        """Bring the running ingestors to ``cameras`` (``CameraConfig``s); returns what changed."""
        want = {c.id: c for c in cameras if c.source and self.owns(c.id)}
        changes: dict[str, list[str]] = {"started": [], "stopped": []}
        for cam, (cfg, _, stop, thread) in list(self._running.items()):
            if cam not in want or want[cam] != cfg or cam in self._failed:
                stop.set()
                thread.join(timeout=30)
                del self._running[cam]
                self._failed.discard(cam)
                changes["stopped"].append(cam)
        for cam, cfg in want.items():
            if cam in self._running:
                continue
            settings = self.settings.model_copy(update={"options": {**self.settings.options, **cfg.source_options}})
            ing = Ingestor(cam, cfg.source, self.kafka, settings, self.metrics)
            stop = threading.Event()
            thread = threading.Thread(target=self._run, args=(ing, stop), name=f"ingest-{cam}", daemon=True)
            thread.start()
            self._running[cam] = (cfg, ing, stop, thread)
            changes["started"].append(cam)
        return changes

    def _run(self, ing: Ingestor, stop: threading.Event) -> None:
        try:
            ing.run(stop)
        except Exception:  # given up on its source: logged; the next reconcile starts it again
            log.exception("camera %s: ingest gave up on its source", ing.camera)
            self._failed.add(ing.camera)

    def any_failed(self) -> bool:
        """True when some camera's ingest gave up (the next reconcile restarts it)."""
        return bool(self._failed)

    @property
    def cameras(self) -> list[str]:
        return sorted(self._running)

    def stats(self) -> dict[str, IngestStats]:
        return {cam: ing.stats for cam, (_, ing, _, _) in self._running.items()}

    def stop(self) -> None:
        for _, _, stop, _ in self._running.values():
            stop.set()
        for cam, (_, _, _, thread) in list(self._running.items()):
            thread.join(timeout=30)
        self._running.clear()
