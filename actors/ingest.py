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

from pydantic import BaseModel, Field

from streamdycoke.video import DecodeStats, decode_frames

from .frames import encode_frame
from .metrics import IngestMetrics

__all__ = ["IngestSettings", "IngestStats", "Ingestor", "ensure_topic", "topic_for"]

log = logging.getLogger(__name__)


class IngestSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "frames."
    size: int = Field(384, gt=0, description="frames are resized to size x size (the encoder's input)")
    loop: bool = False
    realtime: bool = False
    max_frames: int | None = None
    reconnect_backoff_s: float = Field(0.5, gt=0)
    reconnect_backoff_max_s: float = Field(10.0, gt=0)
    max_reconnects: int | None = None
    options: dict[str, str] = Field(default_factory=dict,
                                    description="FFmpeg options for opening the source, e.g. rtsp_transport=tcp")
    timeout_s: float | None = Field(15.0, gt=0, description="a source silent this long is dropped and reopened")


def topic_for(camera: str, prefix: str = "frames.") -> str:
    return f"{prefix}{camera}"


def ensure_topic(bootstrap: str, topic: str, message_bytes: int) -> None:
    """Create a single-partition topic sized for raw frames if it does not exist."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="streamdycoke-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                      topic_configs={"max.message.bytes": str(message_bytes)})])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


@dataclass
class IngestStats:
    frames: int = 0
    corrupt_packets: int = 0
    reconnects: int = 0


class Ingestor:
    """Publishes one camera's frames. Opens nothing until :meth:`run`."""

    def __init__(self, camera: str, source: str, settings: IngestSettings | None = None,
                 metrics: IngestMetrics | None = None) -> None:
        self.camera = camera
        self.source = source
        self.settings = settings or IngestSettings()
        self.stats = IngestStats()
        self.metrics = metrics
        self.topic = topic_for(camera, self.settings.topic_prefix)

    def run(self, stop: threading.Event | None = None) -> IngestStats:
        from kafka import KafkaProducer

        s = self.settings
        stop = stop or threading.Event()
        message_bytes = s.size * s.size * 3 + 4096
        ensure_topic(s.bootstrap, self.topic, message_bytes)
        producer = KafkaProducer(bootstrap_servers=s.bootstrap, acks="all", linger_ms=5,
                                 max_request_size=max(message_bytes, 1 << 20))
        t0_wall = time.time()
        offset = 0.0  # added to a looping file's timestamps so they keep growing
        backoff = s.reconnect_backoff_s
        try:
            while not stop.is_set():
                last_ts = None
                dec = DecodeStats()
                try:
                    for fr in decode_frames(self.source, size=(s.size, s.size), stats=dec,
                                            options=s.options, timeout=s.timeout_s):
                        if stop.is_set() or (s.max_frames is not None and self.stats.frames >= s.max_frames):
                            return self.stats
                        ts = offset + fr.timestamp
                        if s.realtime:
                            delay = t0_wall + ts - time.time()
                            if delay > 0:
                                stop.wait(delay)
                        producer.send(self.topic, key=self.camera.encode(),
                                      value=encode_frame(self.camera, self.stats.frames, t0_wall + ts, fr.rgb))
                        self.stats.frames += 1
                        if self.metrics is not None:
                            self.metrics.published(self.camera, t0_wall + ts)
                        last_ts = fr.timestamp
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
                    continue
                self.stats.corrupt_packets += dec.corrupt_packets
                if self.metrics is not None:
                    self.metrics.corrupt(self.camera, dec.corrupt_packets)
                if not s.loop:
                    break
                offset += (last_ts or 0.0) + 1.0 / 30
        finally:
            producer.flush()
            producer.close()
        return self.stats
