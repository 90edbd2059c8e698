"""One camera's worker: Kafka frames -> sampler, encoder, policy, sliding window -> the token cache.

:class:`CameraWorker` is a plain class (the Ray actor is a thin shell around it), so tests drive it
directly. It opens no connection in ``__init__``; :meth:`start` does.

Delivery: at least once, made exactly-once in effect. The worker consumes its camera's topic by
manual partition assignment (no consumer-group rebalancing) and commits the Kafka offset only after
the batch's segments are in Redis. Writes are idempotent on (camera, frame index), and a restarted
worker rebuilds its sliding window from the cache (:meth:`StreamState.from_segments`) and skips the
frames the cache already holds, so a replay loses nothing and stores nothing twice.

Bad input never stops the stream: a message that does not parse, has the wrong size, or belongs to
another camera goes to the dead-letter topic, its original bytes with the reason in headers
(``reason``, ``detail``, ``camera``, ``topic``, ``offset``), and is counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from streamdycoke import EncoderSpec, StreamState, TokenStore, build_pipeline
from streamdycoke.stats import percentile

from .config import CameraConfig, KafkaSettings
from .frames import FrameFormatError, decode_frame
from .topics import ensure_topic

__all__ = ["CameraCounters", "CameraWorker"]

log = logging.getLogger(__name__)


@dataclass
class CameraCounters:
    """Every frame consumed is exactly one of processed, skipped (sampler) or dead-lettered."""

    consumed: int = 0
    processed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    replayed: int = 0  # already in the cache (a replay after a restart): neither stored nor counted again
    tokens_in: int = 0
    tokens_kept: int = 0
    frame_to_cache_s: list[float] = field(default_factory=list)  # the last 10,000, for percentiles
    _new_latencies: list[float] = field(default_factory=list)

    def drain_new_latencies(self) -> list[float]:
        """Latencies recorded since the last call (for a metrics exporter)."""
        out, self._new_latencies = self._new_latencies, []
        return out

    def percentile_ms(self, q: float) -> float | None:
        p = percentile(self.frame_to_cache_s, q)
        return None if p is None else 1e3 * p


class CameraWorker:
    """One camera's consumer, per-frame pipeline and token-cache writer.

    Args:
        camera: the camera.
        kafka: the broker and topics.
        store: the token cache (any :class:`~streamdycoke.TokenStore`; Redis in the pipeline).
        app_model: the application's LLM, whose vision tower the camera uses unless it names its own encoder.
    """

    def __init__(self, camera: CameraConfig, kafka: KafkaSettings, store: TokenStore,
                 app_model: EncoderSpec | None = None) -> None:
        self.camera = camera
        self.kafka = kafka
        self.store = store
        self.config = camera.pipeline_config(app_model)
        self.counters = CameraCounters()
        self.topic = kafka.topic_for(camera.id)
        self._consumer = self._producer = self.pipeline = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect, rebuild the window from the cache, and resume from the committed offset."""
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        cam, kafka = self.camera, self.kafka
        self._tp = TopicPartition(self.topic, 0)
        # the actor may start before its camera's ingest: create the topic rather than assigning a
        # partition that does not exist yet
        ensure_topic(kafka, self.topic)
        self._consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap, group_id=kafka.group_prefix + cam.id,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=kafka.max_poll_records,
            max_partition_fetch_bytes=kafka.max_message_bytes, fetch_max_bytes=4 * kafka.max_message_bytes,
        )
        self._consumer.assign([self._tp])
        committed = self._consumer.committed(self._tp)
        if committed is not None:
            self._consumer.seek(self._tp, committed)
        ensure_topic(kafka, kafka.dead_letter_topic)
        self._producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all",
                                       max_request_size=kafka.max_message_bytes)
        self._pending_dead_letters: list = []
        last = self.store.last_frame_index(cam.id)
        state = None
        if last is not None:
            recent = self.store.read(cam.id)  # retention keeps this bounded; starts at a keyframe
            state = StreamState.from_segments(cam.id, recent)
        self.pipeline = build_pipeline(cam.id, self.config, state=state)

    def stop(self) -> None:
        for c in (self._consumer, self._producer):
            if c is not None:
                c.close()
        self._consumer = self._producer = None

    # -- work --------------------------------------------------------------------------------------
    def lag(self) -> int:
        """Frames in the topic not yet consumed."""
        end = self._consumer.end_offsets([self._tp])[self._tp]
        return max(0, end - self._consumer.position(self._tp))

    def step(self, timeout_ms: int = 200) -> int:
        """Consume at most one bounded batch, store its segments, then commit. Returns frames consumed."""
        batch = self._consumer.poll(timeout_ms=timeout_ms, max_records=self.kafka.max_poll_records).get(self._tp, [])
        if not batch:
            return 0
        segments, arrivals = [], []
        state = self.pipeline.state
        c = self.counters
        for rec in batch:
            c.consumed += 1
            try:
                msg = decode_frame(rec.value)
                if msg.camera != self.camera.id:
                    raise FrameFormatError("unknown_camera", f"message for camera {msg.camera!r} on {self.topic}")
            except FrameFormatError as exc:
                self._dead_letter(rec, exc.reason, str(exc))
                continue
            if msg.frame_index <= state.last_frame_index:  # replay of a frame the cache already holds
                c.consumed -= 1
                c.replayed += 1
                continue
            try:
                out = self.pipeline.push(msg.rgb, msg.frame_index, msg.timestamp)
            except ValueError as exc:  # e.g. a frame too small for the sampler
                self._dead_letter(rec, "bad_frame", str(exc))
                continue
            if out.segment is None:
                c.skipped += 1
                continue
            c.processed += 1
            c.tokens_in += out.segment.num_positions
            c.tokens_kept += out.segment.num_kept
            segments.append(out.segment)
            arrivals.append(msg.timestamp)
        if segments:
            self.store.append_many(segments)
            now = time.time()
            lat = [now - t for t in arrivals]
            c.frame_to_cache_s.extend(lat)
            del c.frame_to_cache_s[:-10_000]  # bounded
            c._new_latencies.extend(lat)
            del c._new_latencies[:-10_000]
        # dead letters are durable before the offset moves past them; a failed send raises here
        self._producer.flush()
        for fut in self._pending_dead_letters:
            fut.get(timeout=10)
        self._pending_dead_letters.clear()
        self._consumer.commit()
        return len(batch)

    def _dead_letter(self, rec, reason: str, detail: str) -> None:
        self.counters.dead_lettered += 1
        log.warning("camera %s: offset %d dead-lettered: %s", self.camera.id, rec.offset, detail)
        headers = [("reason", reason.encode()), ("detail", detail.encode()[:1000]), ("camera", self.camera.id.encode()),
                   ("topic", self.topic.encode()), ("offset", str(rec.offset).encode())]
        # the original bytes, untouched, so the record can be inspected and replayed
        self._pending_dead_letters.append(
            self._producer.send(self.kafka.dead_letter_topic, key=self.camera.id.encode(), value=rec.value, headers=headers)
        )
