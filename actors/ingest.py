"""``streamdycoke ingest``: camera source -> decoded, resized frames -> Kafka, one topic per camera.

Per-camera order is Kafka's: each camera has its own single-partition topic ``{prefix}{camera}``, so
its frames are consumed in the order they were produced. A file can loop (timestamps keep growing)
and can be paced by its timestamps like a live source; a live source (RTSP, HTTP) that drops is
reopened with exponential backoff, frame indices continuing where they were. Many cameras in one
process: :class:`actors.ingest_fleet.IngestFleet`.

Size: over 300 lines by its docstrings; one camera's ingest loop, its resume point and its retries are one
state machine, and its code is under 300.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field

from streamdycoke.sampler import FrameSampler, SamplerConfig
from streamdycoke.stats import StageTimes
from streamdycoke.video import DecodeStats, SourceFrame, decode_video

from .backoff import Backoff
from .config import IngestSettings, KafkaSettings
from .frames import FrameFormatError, decode_frame, encode_frame, encode_skip, peek_indices
from .metrics import IngestMetrics
from .topics import committed_index, ensure_topic, read_to_end

__all__ = ["INGEST_STAGES", "IngestStats", "Ingestor", "add_span"]

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    """What one camera's ingest did. Every frame decoded and acknowledged by the broker counts in
    ``frames``, as sent (``published``) or skipped by the edge sampler (``skipped``)."""

    frames: int = 0  # ingested: frames acknowledged by the broker, sent or accounted for as skipped
    published: int = 0  # frames sent with their pixels
    skipped: int = 0  # frames the edge sampler skipped (accounted for by a skip count, never sent)
    messages: int = 0  # Kafka messages acknowledged (frames sent, skip records)
    bytes_sent: int = 0  # their size
    corrupt_packets: int = 0
    reconnects: int = 0
    send_failures: int = 0  # sends that failed and were retried (never counted as published)
    resume_failures: int = 0  # reads of the topic's end the broker did not answer (retried before any send)
    # the frame indices the broker acknowledged, as sorted, disjoint [first, last] spans (a message accounts for
    # its frame and the skipped frames before it): what a benchmark checks the topic and the cache against
    acked: list[list[int]] = field(default_factory=list)
    start_ts: float | None = None  # capture time given to the source's time 0 (a looped file repeats from it)
    # per frame, seconds by stage (INGEST_STAGES): the last 10,000 of each for percentiles
    times: StageTimes = field(default_factory=StageTimes)


# A frame's time in ingest, by stage (seconds):
#   decode   the decoder's work on the frame (its packet's decode, shared over the frames it gave)
#   sample   the edge frame sampler: luma thumbnail and decision (every frame, with edge sampling)
#   resize   conversion to RGB at the encoder's size (only frames that are sent)
#   ingest   the frame's capture timestamp to its send: everything above plus waiting for the thread
#            (only frames that are sent)
#   publish  send to the broker's acknowledgement (only frames that are sent)
INGEST_STAGES = ("decode", "sample", "resize", "ingest", "publish")


class Ingestor:
    """Publishes one camera's frames. Opens nothing until :meth:`run`.

    Args:
        camera: the camera's id.
        source: what PyAV opens (file, rtsp://, http(s)://).
        kafka: the broker.
        settings: what to do with the source.
        metrics: where to count (``streamdycoke ingest --metrics-port``).
        sampler: the camera's frame sampler; with ``settings.edge_sampling`` it runs here and only the frames it
            chooses are sent (None, or edge sampling off: every frame is sent).
    """

    def __init__(self, camera: str, source: str, kafka: KafkaSettings | None = None,
                 settings: IngestSettings | None = None, metrics: IngestMetrics | None = None,
                 sampler: SamplerConfig | None = None) -> None:
        self.camera = camera
        self.source = source
        self.kafka = kafka or KafkaSettings()
        self.settings = settings or IngestSettings()
        self.stats = IngestStats()
        self.metrics = metrics
        self.topic = self.kafka.topic_for(camera)
        self.sampler_config = sampler if self.settings.edge_sampling else None
        self._producer = None

    def run(self, stop: threading.Event | None = None) -> IngestStats:
        """Publish until the source ends (or ``max_frames``, or ``stop``). Returns this run's stats.

        Frame indices continue from the last one in the topic (a restarted ingest never reuses an
        index the camera's actor has already stored). Capture timestamps are the run's start time plus the
        source's own timestamps; a reopened source continues from the wall clock, a looped file from
        its previous pass, so they only grow.

        With edge sampling, a skipped frame is not sent: the next message sent says how many frames
        before it were skipped (a frame, or a skip record after ``skip_record_s``), so the indices stay
        contiguous and the camera's actor accounts for every frame. Skipped frames not yet accounted for
        when the run stops are sent as a skip record; a run killed outright loses only those (never
        acknowledged, so never ingested: the next run reuses their indices).
        """
        s = self.settings
        stop = stop or threading.Event()
        if self.metrics is not None:
            self.metrics.camera_started(self.camera)
        resumed = self._resume(stop)
        if resumed is None:
            return self.stats
        first_index, last_ts = resumed
        gc.freeze()  # start-up's objects out of the collector's full passes (they stall every ingest thread)
        t0_wall = max(time.time(), last_ts + 1.0 / 30)
        self.stats.start_ts = t0_wall
        base = 0.0  # where (seconds after t0_wall) the current pass's first frame goes
        backoff = self._backoff()
        sampler = FrameSampler(self.sampler_config) if self.sampler_config is not None else None
        size = (s.size, s.size)
        self._pending, self._pending_since, self._pending_ts = 0, 0.0, 0.0  # skipped, not yet accounted for
        try:
            while not stop.is_set():
                first_ts = last_rel = None
                dec = DecodeStats()
                try:
                    for fr in decode_video(self.source, stats=dec, options=s.options, timeout=s.timeout_s):
                        if stop.is_set() or (s.max_frames is not None and
                                             self.stats.frames + self._pending >= s.max_frames):
                            return self.stats
                        self._time("decode", fr.decode_s)
                        first_ts = fr.timestamp if first_ts is None else first_ts
                        last_rel = fr.timestamp - first_ts
                        ts = t0_wall + base + last_rel
                        if s.realtime:
                            delay = ts - time.time()
                            if delay > 0:
                                stop.wait(delay)
                        index = first_index + self.stats.frames + self._pending
                        if not self._ingest(fr, index, ts, sampler, size, stop):
                            return self.stats  # stopped while the broker was unreachable
                        backoff.succeeded()
                except Exception as exc:  # a dropped or unreachable source: reopen with backoff
                    self.stats.corrupt_packets += dec.corrupt_packets
                    if self.metrics is not None:
                        self.metrics.source_failed(self.camera, dec.corrupt_packets)
                    if s.max_reconnects is not None and self.stats.reconnects >= s.max_reconnects:
                        raise
                    self.stats.reconnects += 1
                    wait = backoff.failed()
                    log.warning("camera %s: source %s failed (%s); reopening in %.1fs", self.camera, self.source, exc, wait)
                    stop.wait(wait)
                    # a live source resumes at the wall clock: later than anything already published
                    base = max(base + (last_rel or 0.0) + 1.0 / 30, time.time() - t0_wall)
                    continue
                self.stats.corrupt_packets += dec.corrupt_packets
                if self.metrics is not None:
                    self.metrics.corrupt(self.camera, dec.corrupt_packets)
                if not s.loop:
                    break
                base += (last_rel or 0.0) + 1.0 / 30  # a looped file: the next pass starts 1/30 s after the last frame
        finally:
            try:
                if self._pending:  # account for the skipped frames (a fresh stop: the run is over anyway)
                    last = first_index + self.stats.frames + self._pending - 1
                    self._send(encode_skip(self.camera, last, self._pending_ts, self._pending - 1), self._pending,
                               0, self._pending_ts, threading.Event(), attempts=3)
            finally:
                self._close_producer()
        return self.stats

    def _ingest(self, fr: SourceFrame, index: int, ts: float, sampler: FrameSampler | None, size: tuple[int, int],
                stop: threading.Event) -> bool:
        """Sample, resize and send one decoded frame (or count it as skipped); False if stopped meanwhile."""
        decision = None
        if sampler is not None:
            t0 = time.perf_counter()
            decision = sampler.decide_thumbnail(fr.thumbnail(sampler.config.thumb_size), ts)
            self._time("sample", time.perf_counter() - t0)
            if not decision.process:
                if not self._pending:
                    self._pending_since = ts
                self._pending += 1
                self._pending_ts = ts
                if ts - self._pending_since < self.settings.skip_record_s:  # capture time: deterministic
                    return True
                value = encode_skip(self.camera, index, ts, self._pending - 1)
                return self._send(value, self._pending, 0, ts, stop)
        t0 = time.perf_counter()
        rgb = fr.rgb(size)
        self._time("resize", time.perf_counter() - t0)
        self._time("ingest", max(0.0, time.time() - ts))  # capture to send: pacing, GIL, sample and resize
        skipped = self._pending
        value = encode_frame(self.camera, index, ts, rgb, skipped_before=skipped, sampled=decision is not None,
                             scene_cut=bool(decision and decision.scene_cut),
                             pixel_change=min(1.0, decision.pixel_change) if decision else 0.0)
        return self._send(value, skipped + 1, 1, ts, stop)

    def _time(self, stage: str, seconds: float) -> None:
        self.stats.times.add(stage, seconds)
        if self.metrics is not None:
            self.metrics.stage(self.camera, stage, seconds)

    def _send(self, value: bytes, frames: int, published: int, ts: float, stop: threading.Event,
              attempts: int | None = None) -> bool:
        """Send one message accounting for ``frames`` frames (``published`` of them with pixels) and count
        them once acknowledged; False if stopped (or out of ``attempts``) before that."""
        t0 = time.perf_counter()
        if not self._publish(value, stop, attempts):
            return False
        st = self.stats
        if published:
            self._time("publish", time.perf_counter() - t0)
        span = peek_indices(value)
        if span is not None:
            add_span(st.acked, *span)
        st.frames += frames
        st.published += published
        st.skipped += frames - published
        st.messages += 1
        st.bytes_sent += len(value)
        self._pending = 0
        if self.metrics is not None:
            self.metrics.published(self.camera, ts, frames=frames, skipped=frames - published, nbytes=len(value))
        return True

    def _backoff(self) -> Backoff:
        """The waits between tries: ``reconnect_backoff_s``, doubling up to ``reconnect_backoff_max_s``."""
        s = self.settings
        return Backoff(s.reconnect_backoff_s, max(s.reconnect_backoff_s, s.reconnect_backoff_max_s))

    def _publish(self, value: bytes, stop: threading.Event, attempts: int | None = None) -> bool:
        """Send one frame to partition 0 and wait for the broker's acknowledgement, so a frame counts as
        published only once it is durable and frames stay in order. A failed send is counted, the
        producer rebuilt (a producer can be left unusable, e.g. after a broker restart lost its
        producer id) and the same frame sent again, with backoff, until it succeeds or ``stop``."""
        backoff = self._backoff()
        tries = 0
        while not stop.is_set() and (attempts is None or tries < attempts):
            tries += 1
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
                wait = backoff.failed()
                log.warning("camera %s: send failed (%s: %s); rebuilding the producer and retrying in %.1fs",
                            self.camera, type(exc).__name__, exc, wait)
                self._close_producer()
                stop.wait(wait)
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

    def _resume_point(self, stop: threading.Event | None = None) -> tuple[int, float] | None:
        """One past the highest frame index the camera's topic or its actor has seen (0 for a new camera),
        and the latest capture timestamp in the topic (0.0 if none); None if ``stop`` came first.

        Read from the messages themselves (the last 64 before the reported end, then on to the true end;
        the whole topic if none of those carries an index): see :func:`actors.topics.read_to_end`, which
        raises rather than take a read the broker does not answer for an empty topic. The index the actor
        committed as consumed counts too: a topic whose retention deleted the camera's last frames must not
        restart the numbering. Bounded: this camera's ingest is the only producer of its topic, and it is
        not running while this reads.
        """
        last, last_ts = -1, 0.0
        for back in (64, None):
            records = 0
            for rec in read_to_end(self.kafka, self.topic, back=back, stop=stop):
                records += 1
                try:
                    msg = decode_frame(rec.value)
                except FrameFormatError:  # a malformed message is the actor's to dead-letter
                    continue
                last, last_ts = max(last, msg.frame_index), max(last_ts, msg.timestamp)
            if stop is not None and stop.is_set():
                return None
            if last >= 0 or records == 0:
                break
        committed = committed_index(self.kafka, self.camera)
        return max(last, -1 if committed is None else committed) + 1, last_ts

    def _resume(self, stop: threading.Event) -> tuple[int, float] | None:
        """:meth:`_resume_point`, retried with backoff while the broker cannot answer (None if stopped)."""
        backoff = self._backoff()
        while not stop.is_set():
            try:
                ensure_topic(self.kafka, self.topic)
                return self._resume_point(stop)
            except Exception as exc:
                self.stats.resume_failures += 1
                if self.metrics is not None:
                    self.metrics.resume_failed(self.camera)
                wait = backoff.failed()
                log.warning("camera %s: cannot read where its topic ends (%s: %s); retrying in %.1fs",
                            self.camera, type(exc).__name__, exc, wait)
                stop.wait(wait)
        return None


def add_span(spans: list[list[int]], first: int, last: int) -> None:
    """Add the indices ``first..last`` to ``spans`` (sorted, disjoint ``[first, last]`` lists), merging
    with the last span when they touch or overlap; a span out of order is inserted where it belongs.

    >>> s = []; add_span(s, 0, 4); add_span(s, 5, 5); add_span(s, 9, 9); s
    [[0, 5], [9, 9]]
    """
    if not spans or first > spans[-1][1] + 1:
        spans.append([first, last])
    elif first >= spans[-1][0]:
        spans[-1][1] = max(spans[-1][1], last)
    else:  # reaches back before the last span (never from one ingest run): merge the whole list again
        merged: list[list[int]] = []
        for a, b in sorted([*spans, [first, last]]):
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        spans[:] = merged
