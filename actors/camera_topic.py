"""One camera's topic as its worker reads it (:class:`CameraTopic`): a Kafka consumer of partition 0 by manual
assignment (no consumer-group rebalancing), positioned at the committed offset, committing with metadata,
and its fetch deadline adapted to a broker that, like the embedded one, answers a fetch only at its
deadline.
"""

from __future__ import annotations

import logging
import time

from .config import KafkaSettings

from .frames import peek_indices

__all__ = ["IDLE_CHECK_S", "MAX_FETCH_WAIT_MS", "CameraTopic"]

log = logging.getLogger(__name__)

# Fetch deadlines (ms) an idle camera goes up to when the broker reports frames waiting, and when it reports none;
# and how long a camera is idle before it asks the broker whether frames wait (s): CameraTopic.adapt.
MAX_FETCH_WAIT_MS = 1000
IDLE_FETCH_WAIT_MS = 100
IDLE_CHECK_S = 1.0
RELAX_AFTER_BATCHES = 3


class CameraTopic:
    """A camera's topic, read by one consumer. Opens nothing in ``__init__``; :meth:`open` does.

    Args:
        camera_id: the camera (for logs and the consumer group, ``group_prefix + camera_id``).
        topic: its topic.
        kafka: the broker settings.
    """

    def __init__(self, camera_id: str, topic: str, kafka: KafkaSettings) -> None:
        self.camera_id, self.topic, self.kafka = camera_id, topic, kafka
        self.configured_ms = kafka.fetch_max_wait_ms
        self.consumer = None
        self.tp = None
        # the broker's fetch deadline, adapted (:meth:`adapt`): the configured one while caught up, longer
        # while frames wait and fetches come back empty (a broker reading cold data, like tansu from its
        # object store after a restart, answers a fetch empty at a deadline shorter than its read)
        self.fetch_max_wait_ms = self.configured_ms
        self._adapted_at = 0.0
        self._caught_up = 0  # batches in a row that left nothing waiting (relaxes a lengthened deadline)
        self._fetch_wait_fixed = False  # the client offers no way to change it live

    def open(self):
        """Connect, assign the partition and seek to the committed offset (else the topic's start).
        Returns the committed ``OffsetAndMetadata`` or None."""
        from kafka import KafkaConsumer, TopicPartition

        kafka = self.kafka
        self.tp = TopicPartition(self.topic, 0)
        self.consumer = KafkaConsumer(
            **kafka.client_kwargs(), group_id=kafka.group_prefix + self.camera_id,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=kafka.max_poll_records,
            fetch_max_wait_ms=self.configured_ms,
            max_partition_fetch_bytes=kafka.max_message_bytes, fetch_max_bytes=4 * kafka.max_message_bytes,
        )
        self.fetch_max_wait_ms = self.configured_ms
        self.consumer.assign([self.tp])
        committed = self.consumer.committed(self.tp, metadata=True)
        if committed is not None:
            self.consumer.seek(self.tp, committed.offset)
        else:
            self.consumer.seek_to_beginning(self.tp)
        return committed

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            except Exception:  # closing a client of a dead broker: nothing more to do
                log.debug("camera %s: close failed", self.camera_id, exc_info=True)
        self.consumer = None

    def poll(self, timeout_ms: int, max_records: int) -> tuple[int, list]:
        """``(position before, records)``: at most ``max_records``, waiting up to ``timeout_ms`` for them."""
        before = self.consumer.position(self.tp)
        return before, self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records).get(self.tp, [])

    def position(self) -> int:
        return self.consumer.position(self.tp)

    def commit(self, offset: int, metadata: str) -> None:
        from kafka.structs import OffsetAndMetadata

        self.consumer.commit({self.tp: OffsetAndMetadata(offset, metadata, -1)})

    def seek_to_beginning(self) -> None:
        self.consumer.seek_to_beginning(self.tp)

    def seek_after(self, newest: float | None) -> None:
        """Position the consumer at or before the first record sent after the frame captured at ``newest``
        (the newest the cache holds; None: it holds none, so the topic's start). Frames between it and the
        committed offset are read again: those the cache lost are stored again (:class:`actors.camera_batch.CameraHandler`), the others
        are replays. A broker that cannot look offsets up by time is read from the start."""
        if newest is not None:
            try:
                found = self.consumer.offsets_for_times({self.tp: max(0, int(newest * 1e3) - 1000)})[self.tp]
                if found is not None:
                    self.consumer.seek(self.tp, min(found.offset, self.consumer.position(self.tp)))
            except Exception as exc:  # e.g. the broker has no time index
                log.info("camera %s: no offset lookup by time (%s); re-reading %s from its start", self.camera_id,
                         type(exc).__name__, self.topic)
                found = None
            if found is not None:
                return
        self.consumer.seek_to_beginning(self.tp)

    def index_before(self, offset: int, timeout_s: float = 30.0) -> str:
        """The last frame index the record just before ``offset`` accounts for, as text ("" if unreadable),
        read from the topic with the longest fetch deadline (a broker just restarted reads it cold); the
        consumer is left at ``offset``, its deadline as it was."""
        wait = self.fetch_max_wait_ms
        try:
            self.set_fetch_wait(MAX_FETCH_WAIT_MS)
            self.consumer.seek(self.tp, offset - 1)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                for rec in self.consumer.poll(timeout_ms=2 * MAX_FETCH_WAIT_MS, max_records=1).get(self.tp, []):
                    span = peek_indices(rec.value)
                    return "" if span is None else str(span[1])
            return ""
        finally:
            self.set_fetch_wait(wait)
            self.consumer.seek(self.tp, offset)

    def set_fetch_wait(self, ms: int) -> None:
        """Set the live consumer's fetch deadline. kafka-python reads it from its fetcher's config for each
        fetch request and offers no public setter; this is the one place that reaches into it (a client
        without that config keeps its deadline, and the worker says so once)."""
        config = getattr(getattr(self.consumer, "_fetcher", None), "config", None)
        if not isinstance(config, dict) or "fetch_max_wait_ms" not in config:
            if not self._fetch_wait_fixed:
                log.warning("camera %s: this Kafka client's fetch deadline cannot be changed live; it stays at "
                            "%d ms", self.camera_id, self.fetch_max_wait_ms)
            self._fetch_wait_fixed = True
            return
        self.fetch_max_wait_ms = config["fetch_max_wait_ms"] = ms
        self._adapted_at = time.monotonic()

    def adapt(self, waiting: int) -> None:
        """Idle past :data:`IDLE_CHECK_S`: lengthen the fetch deadline (x4, once each fetch at the current one
        had time to answer) up to :data:`MAX_FETCH_WAIT_MS` while ``waiting`` frames are not handed over, and
        up to :data:`IDLE_FETCH_WAIT_MS` while the broker reports none (tansu's reported end can trail frames
        it holds and reads only with a longer deadline). Real Kafka answers a fetch as soon as data is there,
        so there a long deadline costs nothing while frames flow, and idle fetches are fewer."""
        base = self.configured_ms
        cap = MAX_FETCH_WAIT_MS if waiting > 0 else max(base, IDLE_FETCH_WAIT_MS)
        if self.fetch_max_wait_ms < cap and time.monotonic() - self._adapted_at > 2e-3 * self.fetch_max_wait_ms:
            ms = min(cap, max(4 * self.fetch_max_wait_ms, 40))
            log.log(logging.INFO if waiting > 0 else logging.DEBUG,
                    "camera %s: idle while %d frames wait by the broker's count: fetch deadline %d -> %d ms",
                    self.camera_id, waiting, self.fetch_max_wait_ms, ms)
            self.set_fetch_wait(ms)
            self._caught_up = 0

    def relax(self) -> None:
        """Back to the configured fetch deadline after :data:`RELAX_AFTER_BATCHES` batches in a row that
        left nothing waiting by the last fetch's count (a long deadline delays the live tail on a broker
        that, like tansu, answers only at the deadline). Uses what the last fetch said: no round trip."""
        if self.fetch_max_wait_ms == self.configured_ms:
            return
        end = self.consumer.highwater(self.tp)
        if end is None or end - self.consumer.position(self.tp) > 0:
            self._caught_up = 0
            return
        self._caught_up += 1
        if self._caught_up >= RELAX_AFTER_BATCHES:
            self.set_fetch_wait(self.configured_ms)
            self._caught_up = 0

    def lag(self, fresh: bool = True) -> int:
        """Frames in the topic not yet consumed: the broker's end offset minus our position, never clamped
        (negative when the topic shrank below our position, or where a broker reports its end loosely).

        ``fresh=False`` takes the end from the last fetch response (no round trip; what a stalled
        consumer knows is stale, so stall detection asks the broker)."""
        end = None if fresh else self.consumer.highwater(self.tp)
        if end is None:
            end = self.consumer.end_offsets([self.tp])[self.tp]
        return end - self.consumer.position(self.tp)
