"""The Kafka topics the pipeline creates (one single-partition topic per camera, and the dead-letter topic),
and reading a camera's topic back to its true end.

Whoever starts first (a camera's ingest or its actor) creates them, with the same settings from
:class:`~actors.config.KafkaSettings`, so which one wins makes no difference.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

from .config import KafkaSettings

__all__ = ["TopicReadTimeout", "committed_index", "ensure_topic", "frame_indices_in_topic", "read_to_end", "topic_indices"]


class TopicReadTimeout(RuntimeError):
    """The broker reported records in a topic and answered none of them within the deadline."""


def ensure_topic(kafka: KafkaSettings, topic: str) -> None:
    """Create ``topic`` (one partition, ``kafka.max_message_bytes``, ``kafka.replication_factor``) if it does not exist."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(client_id="streamdycoke-admin", **kafka.client_kwargs())
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=kafka.replication_factor,
                                      topic_configs={"max.message.bytes": str(kafka.max_message_bytes)})])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def read_to_end(kafka: KafkaSettings, topic: str, back: int | None = None, settle_polls: int = 3,
                poll_ms: int = 1500, deadline_s: float = 120.0, stop: threading.Event | None = None) -> Iterator:
    """Every record of partition 0 of ``topic`` from its start (or the last ``back`` records before the
    broker's reported end) to its true end, read with a consumer of its own; ends early, quietly, on ``stop``.

    A broker may report its end loosely (tansu's can trail its log, or name an offset it holds nothing at)
    and a slow one answers fetches empty at their deadline (tansu reading its object store under load), so
    neither the end offset nor a few empty polls alone prove the end. The read ends after ``settle_polls``
    empty polls in a row at or past the reported end, or four times as many short of it (a hole the
    broker reports as records). It raises :class:`TopicReadTimeout` when the broker reports records and
    hands over none for ``deadline_s``: a caller must not take an unanswered read for an empty topic.
    """
    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(topic, 0)
    c = KafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False, auto_offset_reset="earliest",
                      max_partition_fetch_bytes=kafka.max_message_bytes, fetch_max_bytes=4 * kafka.max_message_bytes)
    try:
        c.assign([tp])
        begin, end = c.beginning_offsets([tp])[tp], c.end_offsets([tp])[tp]
        start = begin if back is None else max(begin, end - back)
        c.seek(tp, start)
        empty = behind = 0
        last_record = time.monotonic()
        while empty < settle_polls and behind < 4 * settle_polls:
            if stop is not None and stop.is_set():
                return
            batch = c.poll(timeout_ms=poll_ms).get(tp, [])
            if batch:
                empty = behind = 0
                last_record = time.monotonic()
                yield from batch
            elif c.position(tp) >= end:
                empty += 1
            elif time.monotonic() - last_record > deadline_s:
                raise TopicReadTimeout(f"{topic}: the broker reports records up to offset {end} and handed over "
                                       f"none after offset {c.position(tp)} for {deadline_s:.0f} s")
            elif c.position(tp) > start:  # short of the reported end after records came: a hole, or slow
                behind += 1
    finally:
        c.close()


def committed_index(kafka: KafkaSettings, camera: str) -> int | None:
    """The last frame index the camera's actor committed as consumed (its offset's metadata), or None where
    it committed none or the broker keeps no commit metadata (tansu). What ingest resumes after when the
    topic itself no longer holds the camera's last frames (its retention deleted them)."""
    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(kafka.topic_for(camera), 0)
    c = KafkaConsumer(**kafka.client_kwargs(), group_id=kafka.group_prefix + camera, enable_auto_commit=False)
    try:
        committed = c.committed(tp, metadata=True)
    finally:
        c.close()
    meta = (committed.metadata or "") if committed is not None else ""
    return int(meta) if meta.lstrip("-").isdigit() and int(meta) >= 0 else None


def topic_indices(kafka: KafkaSettings, camera: str) -> tuple[set[int], set[int]]:
    """What the camera's topic accounts for, read back from offset 0 to its true end with a fresh consumer:
    every frame index (a frame sent, or frames a skip count stands for), and those of them skipped at the
    edge (never sent: a frame's skipped-before count, a skip record's whole span). What the broker kept, which
    the benchmarks and fault tests compare with what ingest saw acknowledged and what the cache holds."""
    from .frames import is_skip_record, peek_indices

    accounted: set[int] = set()
    skipped: set[int] = set()
    for rec in read_to_end(kafka, kafka.topic_for(camera)):
        span = peek_indices(rec.value)
        if span is None:
            continue
        first, last = span
        accounted.update(range(first, last + 1))
        skipped.update(range(first, last + 1 if is_skip_record(rec.value) else last))
    return accounted, skipped


def frame_indices_in_topic(kafka: KafkaSettings, camera: str) -> set[int]:
    """Every frame index the camera's topic accounts for (:func:`topic_indices`)."""
    return topic_indices(kafka, camera)[0]
