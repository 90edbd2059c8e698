"""The Kafka topics the pipeline creates: one single-partition topic per camera, and the dead-letter topic.

Whoever starts first (a camera's ingest or its actor) creates them, with the same settings from
:class:`~actors.config.KafkaSettings`, so which one wins makes no difference.
"""

from __future__ import annotations

from .config import KafkaSettings

__all__ = ["ensure_topic", "frame_indices_in_topic"]


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


def frame_indices_in_topic(kafka: KafkaSettings, camera: str) -> set[int]:
    """Every frame index the camera's topic accounts for, read from its start to its end (what the broker
    kept: the benchmarks and fault tests compare it with what ingest saw acknowledged)."""
    from kafka import KafkaConsumer, TopicPartition

    from .frames import peek_indices

    tp = TopicPartition(kafka.topic_for(camera), 0)
    c = KafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False, fetch_max_bytes=64 << 20,
                      max_partition_fetch_bytes=kafka.max_message_bytes)
    try:
        c.assign([tp])
        c.seek_to_beginning(tp)
        out: set[int] = set()
        empty = 0
        while empty < 3:  # to the true end (a loaded broker is slow; tansu reports its end loosely)
            batch = c.poll(timeout_ms=1000).get(tp, [])
            empty = 0 if batch else empty + 1
            for rec in batch:
                span = peek_indices(rec.value)
                if span is not None:
                    out.update(range(span[0], span[1] + 1))
        return out
    finally:
        c.close()
