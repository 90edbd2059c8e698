"""One camera's worker: Kafka frames -> sampler, encoder, policy, sliding window -> Redis token cache.

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

import dataclasses
import logging
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, model_validator

from streamdycoke import FramePipeline, FrameSampler, SamplerConfig, StreamCompressor, StreamConfig, StreamState, load_policy
from streamdycoke.encoders import get_encoder

from .frames import FrameFormatError, decode_frame
from .ingest import ensure_topic, topic_for
from .token_cache import RedisSettings, RedisTokenStore

__all__ = ["CameraConfig", "CameraCounters", "CameraWorker", "KafkaSettings"]

log = logging.getLogger(__name__)


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "frames."
    dead_letter_topic: str = "frames.dead-letter"
    group_prefix: str = "streamdycoke-camera-"  # offsets are committed under group prefix + camera id
    max_poll_records: int = Field(32, gt=0, description="bounded batch: at most this many frames in memory")
    replication_factor: int = Field(1, ge=1, description="for topics the pipeline creates (3 on a real cluster)")


class CameraConfig(BaseModel):
    """One camera, as operators configure it."""

    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    source: str | None = None
    min_fps: float = Field(1.0, gt=0)
    max_fps: float = Field(15.0, gt=0)
    window: int = Field(16, ge=1)
    policy: str = "threshold"
    max_keep_ratio: float = Field(1.0, gt=0, le=1.0, description="token budget: most of a frame's tokens kept")
    encoder: str = "pixels"
    source_options: dict[str, str] = Field(default_factory=dict,
                                           description="FFmpeg options for opening the source (ingest)")

    @model_validator(mode="after")
    def _fps_bounds(self) -> "CameraConfig":
        if self.min_fps > self.max_fps:
            raise ValueError(f"camera {self.id}: min_fps {self.min_fps} > max_fps {self.max_fps}")
        return self


class CamerasFile(BaseModel):
    """The camera list operators edit (a Kubernetes ConfigMap, or any YAML/JSON file)."""

    cameras: list[CameraConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> "CamerasFile":
        ids = [c.id for c in self.cameras]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(dup)}")
        return self


def read_config_file(path: str) -> dict:
    """A YAML or JSON (``.json``) config file as a mapping; unreadable syntax or a non-mapping top level is
    a ``ValueError`` naming the file (validation is the caller's, with pydantic)."""
    import json
    from pathlib import Path

    import yaml

    text = Path(path).read_text()
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_cameras(path: str) -> list[CameraConfig]:
    """Read and validate a cameras file (``cameras: [{id, source, ...}]``); errors name the field."""
    return CamerasFile.model_validate(read_config_file(path)).cameras


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
        if not self.frame_to_cache_s:
            return None
        xs = sorted(self.frame_to_cache_s)
        return 1e3 * xs[min(len(xs) - 1, int(q * len(xs)))]


class CameraWorker:
    def __init__(self, camera: CameraConfig, kafka: KafkaSettings | None = None, redis: RedisSettings | None = None) -> None:
        self.camera = camera
        self.kafka = kafka or KafkaSettings()
        self.store = RedisTokenStore(redis)
        self.counters = CameraCounters()
        self.topic = topic_for(camera.id, self.kafka.topic_prefix)
        self._consumer = self._producer = self.pipeline = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect, rebuild the window from the cache, and resume from the committed offset."""
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        cam = self.camera
        self._tp = TopicPartition(self.topic, 0)
        # the actor may start before its camera's ingest: create the topic (frame-sized) rather than
        # assigning a partition that does not exist yet
        ensure_topic(self.kafka.bootstrap, self.topic, 16 << 20, self.kafka.replication_factor)
        self._consumer = KafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap, group_id=self.kafka.group_prefix + cam.id,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=self.kafka.max_poll_records,
            max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20,
        )
        self._consumer.assign([self._tp])
        committed = self._consumer.committed(self._tp)
        if committed is not None:
            self._consumer.seek(self._tp, committed)
        ensure_topic(self.kafka.bootstrap, self.kafka.dead_letter_topic, 16 << 20, self.kafka.replication_factor)
        self._producer = KafkaProducer(bootstrap_servers=self.kafka.bootstrap, acks="all", max_request_size=16 << 20)
        self._pending_dead_letters: list = []
        last = self.store.last_frame_index(cam.id)
        state = None
        if last is not None:
            recent = self.store.read(cam.id)  # retention keeps this bounded; starts at a keyframe
            state = StreamState.from_segments(cam.id, recent)
        policy = load_policy(cam.policy)
        if cam.max_keep_ratio < 1.0 and hasattr(policy, "max_keep_ratio"):
            policy = dataclasses.replace(policy, max_keep_ratio=cam.max_keep_ratio)
        self.pipeline = FramePipeline(
            cam.id, get_encoder(cam.encoder), StreamCompressor(StreamConfig(window=cam.window), policy),
            FrameSampler(SamplerConfig(min_fps=cam.min_fps, max_fps=cam.max_fps)), state,
        )

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
