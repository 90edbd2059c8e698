"""Alerts: the record a standing query raises or clears, its versioned schema, and where it goes.

Every alert is one JSON object (schema ``streamdycoke.alert``, ``version`` 1; the JSON Schema is
:data:`ALERT_SCHEMA`, also in ``docs/alert.schema.json``), sent to

- the Kafka topic ``KafkaSettings.alerts_topic`` (key: the camera id), for whatever consumes alerts;
- a capped Redis stream in the token cache (``P:alerts``), which ``GET /v1/alerts`` serves as
  server-sent events.

A sink that fails keeps the alert (up to ``max_pending``, oldest dropped and counted beyond) and is
tried again on the next alert or :meth:`AlertSinks.retry`, so an outage delays alerts, it does not lose
them silently. Fields may be added within version 1; a field changing meaning is a new version.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import deque
from typing import Any

__all__ = ["ALERT_SCHEMA", "ALERT_SCHEMA_ID", "ALERT_VERSION", "AlertSinks", "alert_record"]

log = logging.getLogger(__name__)

ALERT_SCHEMA_ID = "streamdycoke.alert"
ALERT_VERSION = 1

_NUM = {"type": "number"}
ALERT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://streamdycoke.dev/schemas/alert-v1.json",
    "title": "StreamDyCoke alert, version 1",
    "type": "object",
    "required": ["schema", "version", "id", "camera", "query", "state", "prompt", "answer", "value", "trigger",
                 "trigger_ts", "decided_ts", "latency_s", "window", "answerer", "rule"],
    "properties": {
        "schema": {"const": ALERT_SCHEMA_ID},
        "version": {"const": ALERT_VERSION},
        "id": {"type": "string", "description": "unique per alert"},
        "camera": {"type": "string"},
        "query": {"type": "string", "description": "the standing query's id in the camera's config"},
        "state": {"enum": ["raised", "cleared"]},
        "prompt": {"type": "string"},
        "answer": {"type": "string", "description": "the answer the rule read"},
        "value": {"type": ["number", "null"], "description": "the number a threshold rule read"},
        "trigger": {"enum": ["period", "scene_change"]},
        "trigger_ts": {**_NUM, "description": "Unix time of the trigger: the scheduled instant, or the capture "
                                              "time of the frame the sampler cut on"},
        "decided_ts": {**_NUM, "description": "Unix time the answer was read"},
        "latency_s": {**_NUM, "minimum": 0, "description": "decided_ts - trigger_ts"},
        "window": {"type": "object", "required": ["start_ts", "end_ts", "frames", "visual_tokens"],
                   "properties": {"start_ts": _NUM, "end_ts": _NUM, "frames": {"type": "integer", "minimum": 0},
                                  "visual_tokens": {"type": "integer", "minimum": 0}}},
        "answerer": {"enum": ["llm", "event-qa"]},
        "rule": {"type": "object", "required": ["kind"], "properties": {"kind": {"enum": ["yes_no", "match",
                                                                                            "threshold"]}}},
    },
}


def alert_record(camera: str, query, state: str, answer, value: float | None, trigger: str, trigger_ts: float,
                 decided_ts: float, segments: list) -> dict:
    """The alert (schema version 1) for a standing ``query`` of ``camera`` whose state became ``state``."""
    return {
        "schema": ALERT_SCHEMA_ID, "version": ALERT_VERSION, "id": uuid.uuid4().hex, "camera": camera,
        "query": query.id, "state": state, "prompt": query.prompt, "answer": answer.text, "value": value,
        "trigger": trigger, "trigger_ts": trigger_ts, "decided_ts": decided_ts,
        "latency_s": max(0.0, decided_ts - trigger_ts),
        "window": {"start_ts": segments[0].timestamp if segments else None,
                   "end_ts": segments[-1].timestamp if segments else None, "frames": len(segments),
                   "visual_tokens": answer.visual_tokens},
        "answerer": query.answerer, "rule": query.rule.model_dump(exclude_none=True),
    }


class AlertSinks:
    """Publishes alerts to Kafka and to the token cache's alert stream, keeping what a sink could not take.

    Args:
        kafka: :class:`~actors.config.KafkaSettings` (None: no Kafka sink).
        store: a :class:`~actors.token_cache.RedisTokenStore` (None: no stream for ``/v1/alerts``).
        metrics: :class:`actors.metrics.StandingMetrics` or None (publish failures, dropped alerts).
    """

    def __init__(self, kafka: Any = None, store: Any = None, metrics: Any = None, max_pending: int = 1000) -> None:
        self.kafka, self.store, self.metrics = kafka, store, metrics
        self._producer = None
        self.pending: dict[str, deque] = {s: deque() for s in ("kafka", "redis") if (kafka if s == "kafka" else store)}
        self.max_pending = max_pending
        self.sent = {s: 0 for s in self.pending}

    def __call__(self, record: dict) -> None:
        for sink, q in self.pending.items():
            if len(q) >= self.max_pending:
                q.popleft()
                log.error("alert sink %s: %d alerts waiting; dropping the oldest", sink, len(q))
                if self.metrics is not None:
                    self.metrics.publish_failed(sink, dropped=True)
            q.append(record)
        self.retry()

    def retry(self) -> None:
        """Send what waits, oldest first; a sink that fails keeps the rest for the next try."""
        for sink, q in self.pending.items():
            while q:
                try:
                    (self._to_kafka if sink == "kafka" else self._to_redis)(q[0])
                except Exception as exc:
                    log.warning("alert sink %s failed (%s: %s); %d alerts wait", sink, type(exc).__name__,
                                str(exc)[:200], len(q))
                    if sink == "kafka":
                        self._close()
                    if self.metrics is not None:
                        self.metrics.publish_failed(sink)
                    break
                q.popleft()
                self.sent[sink] += 1

    def _to_kafka(self, record: dict) -> None:
        if self._producer is None:
            from kafka import KafkaProducer

            from .topics import ensure_topic

            ensure_topic(self.kafka, self.kafka.alerts_topic)
            self._producer = KafkaProducer(**self.kafka.client_kwargs(), acks="all")
        self._producer.send(self.kafka.alerts_topic, key=record["camera"].encode(),
                            value=json.dumps(record).encode()).get(timeout=10)

    def _to_redis(self, record: dict) -> None:
        self.store.add_alert(record)

    def _close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:
                pass
            self._producer = None

    def close(self) -> None:
        self.retry()
        self._close()
