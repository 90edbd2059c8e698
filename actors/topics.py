"""The Kafka topics the pipeline creates: one single-partition topic per camera, and the dead-letter topic.

Whoever starts first (a camera's ingest or its actor) creates them, with the same settings from
:class:`~actors.config.KafkaSettings`, so which one wins makes no difference.
"""

from __future__ import annotations

from .config import KafkaSettings

__all__ = ["ensure_topic"]


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
