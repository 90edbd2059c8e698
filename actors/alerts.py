"""Alerts: the record a standing query raises or clears, its versioned schema, and where it goes.

Every alert is one JSON object (schema ``streamdycoke.alert``, ``version`` 1; the JSON Schema is
:data:`ALERT_SCHEMA`, generated from the model :class:`Alert`, also in ``docs/alert.schema.json``), sent to

- the Kafka topic ``KafkaSettings.alerts_topic`` (key: the camera id), for whatever consumes alerts;
- a capped Redis stream in the token cache (``P:alerts``), which ``GET /v1/alerts`` serves as
  server-sent events;
- the camera's webhooks and those of the alert's standing query (:mod:`actors.webhooks`: a signed
  POST; sink ``webhook:<name or position>``).

A sink that fails keeps the alert (up to ``max_pending``, oldest dropped and counted beyond) and is
tried again on the next alert, on :meth:`AlertSinks.retry` and every second from
:meth:`AlertSinks.retry_until` (the camera actor runs it), so an outage delays alerts, it does not lose
them silently; a webhook that failed is not tried again before its backoff (1 s doubling to 5 min,
reset by a success) expires. Fields may be added within version 1; a field changing meaning is a new
version.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from .backoff import Backoff
from .webhooks import WebhookSender

__all__ = ["ALERT_SCHEMA", "ALERT_SCHEMA_ID", "ALERT_VERSION", "Alert", "AlertSinks", "alert_record", "evidence_url"]

log = logging.getLogger(__name__)

ALERT_SCHEMA_ID = "streamdycoke.alert"
ALERT_VERSION = 1

class AlertWindow(BaseModel):
    """The window of frames the answer read."""

    start_ts: float | None = Field(description="capture time of its oldest frame; null for an empty window")
    end_ts: float | None = Field(description="capture time of its newest frame; null for an empty window")
    frames: int = Field(ge=0)
    visual_tokens: int = Field(ge=0)


class AlertRule(BaseModel):
    """The rule that read the answer (its kind, and the rule's own settings beside it)."""

    model_config = ConfigDict(extra="allow")
    kind: Literal["yes_no", "match", "threshold"]


class EvidenceSnapshot(BaseModel):
    frame: int = Field(description="the frame the snapshot shows")
    ts: float = Field(description="its capture time")
    url: str = Field(description="the JPEG, on the gateway (bearer token or console session): "
                                 "/v1/cameras/<camera>/alerts/<id>/snapshot")


class AlertEvidence(BaseModel):
    """What the answer saw (added within version 1, 2026-12; absent in older records, null for an empty
    window): the newest frame of its window, and the newest snapshot within the window, copied for the alert
    and kept evidence_ttl_s (snapshot null: the camera takes none, or none was within the window)."""

    frame: int = Field(description="the newest frame index of the window the answer read")
    frame_ts: float
    snapshot: EvidenceSnapshot | None


class Alert(BaseModel):
    """One alert, schema ``streamdycoke.alert`` version 1: what :func:`alert_record` returns (as JSON) and
    :data:`ALERT_SCHEMA` describes."""

    model_config = ConfigDict(title="StreamDyCoke alert, version 1", populate_by_name=True)
    schema_id: Literal["streamdycoke.alert"] = Field(alias="schema")
    version: Literal[1]
    id: str = Field(description="unique per alert")
    camera: str
    query: str = Field(description="the standing query's id in the camera's config")
    state: Literal["raised", "cleared"]
    prompt: str
    answer: str = Field(description="the answer the rule read")
    value: float | None = Field(description="the number a threshold rule read")
    trigger: Literal["period", "scene_change"]
    trigger_ts: float = Field(description="Unix time of the trigger: the scheduled instant, or the capture time "
                                          "of the frame the sampler cut on")
    decided_ts: float = Field(description="Unix time the answer was read")
    latency_s: float = Field(ge=0, description="decided_ts - trigger_ts")
    window: AlertWindow
    answerer: Literal["llm", "event-qa"]
    rule: AlertRule
    evidence: AlertEvidence | None = None


# generated from the model; docs/alert.schema.json holds it for readers, and a test fails when they differ
# (rewrite it: python -c 'import json; from actors.alerts import ALERT_SCHEMA; print(json.dumps(ALERT_SCHEMA, indent=2))')
ALERT_SCHEMA: dict = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                      "$id": "https://streamdycoke.dev/schemas/alert-v1.json",
                      **Alert.model_json_schema(by_alias=True)}


def evidence_url(camera: str, alert_id: str) -> str:
    """Where the gateway serves an alert's evidence snapshot."""
    return f"/v1/cameras/{camera}/alerts/{alert_id}/snapshot"


def alert_record(camera: str, query, state: str, answer, value: float | None, trigger: str, trigger_ts: float,
                 decided_ts: float, segments: list, evidence: dict | None = None,
                 alert_id: str | None = None) -> dict:
    """The alert (schema version 1) for a standing ``query`` of ``camera`` whose state became ``state``;
    ``segments``: the headers of the window the answer read, in frame order (the live frame may repeat
    the newest stored frame's index: frames are counted once)."""
    return Alert(
        schema_id=ALERT_SCHEMA_ID, version=ALERT_VERSION, id=alert_id or uuid.uuid4().hex, camera=camera,
        query=query.id, state=state, prompt=query.prompt, answer=answer.text, value=value,
        trigger=trigger, trigger_ts=trigger_ts, decided_ts=decided_ts, latency_s=max(0.0, decided_ts - trigger_ts),
        window=AlertWindow(start_ts=segments[0].timestamp if segments else None,
                           end_ts=segments[-1].timestamp if segments else None,
                           frames=len({s.frame_index for s in segments}), visual_tokens=answer.visual_tokens),
        answerer=query.answerer, rule=query.rule.model_dump(exclude_none=True), evidence=evidence,
    ).model_dump(mode="json", by_alias=True)


class AlertSinks:
    """Publishes alerts to Kafka, the token cache's alert stream and webhooks, keeping what a sink could not take.

    Args:
        kafka: :class:`~actors.config.KafkaSettings` (None: no Kafka sink).
        store: a :class:`~actors.token_cache.RedisTokenStore` (None: no stream for ``/v1/alerts``).
        metrics: :class:`actors.metrics.StandingMetrics` or None (publish failures, dropped alerts; a
            webhook's are counted as sink ``webhook``, whichever it is).
        max_pending: alerts a sink keeps while it fails; beyond, the oldest is dropped and counted.
        webhooks: :class:`~actors.webhooks.Webhook` lists by the standing query whose alerts they take, None
            for every alert (:func:`actors.webhooks.webhook_routes` of a camera config). Each is one sink,
            ``webhook:<name>``, or ``webhook:<position>`` counting through the lists in order.
        clock: monotonic seconds, for the webhooks' backoff.

    Kafka and the alert stream are sent by the thread that raises the alert (or by :meth:`retry`); once
    :meth:`retry_until` runs, webhooks are sent by its thread alone, woken by each alert, so a slow or dead
    endpoint never holds up the alert stream, Kafka, or the standing queries. Each group has its own lock:
    a thread that finds the other sending leaves the alert queued for it.
    """

    def __init__(self, kafka: Any = None, store: Any = None, metrics: Any = None, max_pending: int = 1000,
                 webhooks: dict[str | None, list] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kafka, self.store, self.metrics, self.clock = kafka, store, metrics, clock
        self._producer = None
        self.pending: dict[str, deque] = {s: deque() for s in ("kafka", "redis") if (kafka if s == "kafka" else store)}
        self.webhooks: dict[str, tuple[WebhookSender, str | None]] = {}  # sink -> (sender, its query; None: all)
        self.backoff: dict[str, Backoff] = {}
        for query, hooks in (webhooks or {}).items():
            for hook in hooks:
                sink = f"webhook:{hook.name or len(self.webhooks)}"
                if sink in self.webhooks:
                    raise ValueError(f"two webhooks are named {hook.name!r}")
                self.webhooks[sink] = (WebhookSender(hook), query)
                self.backoff[sink] = Backoff()
                self.pending[sink] = deque()
        self.max_pending = max_pending
        self.sent = {s: 0 for s in self.pending}
        self._lock = threading.Lock()  # the queues
        self._sending = {False: threading.Lock(), True: threading.Lock()}  # one sender at a time: core, webhooks
        self._hooks_in_background = False  # set while retry_until runs: it sends the webhooks
        self._wake = threading.Event()

    def _takes(self, sink: str, record: dict) -> bool:
        route = self.webhooks.get(sink)
        return route is None or route[1] is None or route[1] == record.get("query")

    def __call__(self, record: dict) -> None:
        with self._lock:
            for sink, q in self.pending.items():
                if not self._takes(sink, record):
                    continue
                if len(q) >= self.max_pending:
                    q.popleft()
                    log.error("alert sink %s: %d alerts waiting; dropping the oldest", sink, len(q))
                    if self.metrics is not None:
                        self.metrics.publish_failed(sink.split(":")[0], dropped=True)
                q.append(record)
        self._send_group(False, wait=False)
        if self._hooks_in_background:
            self._wake.set()
        else:
            self._send_group(True, wait=False)

    @property
    def waiting(self) -> int:
        """Alerts kept for a sink, over all sinks."""
        return sum(len(q) for q in self.pending.values())

    def retry(self, wait: bool = True) -> None:
        """Send what waits, oldest first; a sink that fails keeps the rest for the next try, and a webhook in
        its backoff is skipped. ``wait=False``: skip a group another thread is sending."""
        self._send_group(False, wait)
        self._send_group(True, wait)

    def _send_group(self, webhooks: bool, wait: bool) -> None:
        lock = self._sending[webhooks]
        if not lock.acquire(blocking=wait):
            return
        try:
            for sink, q in self.pending.items():
                if (sink in self.webhooks) != webhooks:
                    continue
                backoff = self.backoff.get(sink)
                if backoff is not None and not backoff.ready(self.clock()):
                    continue
                while True:
                    with self._lock:
                        if not q:
                            break
                        record = q[0]
                    try:
                        self._send(sink, record)
                    except Exception as exc:
                        self._failed(sink, exc, len(q))
                        break
                    with self._lock:
                        if q and q[0] is record:  # not dropped meanwhile
                            q.popleft()
                    self.sent[sink] += 1
                    if backoff is not None:
                        backoff.succeeded()
        finally:
            lock.release()

    def retry_until(self, stop: threading.Event, every_s: float = 1.0) -> None:
        """Until ``stop``: send the webhooks' alerts as they come, and retry what waits every ``every_s``
        seconds, so kept alerts go out when their sink returns though no new alert comes."""
        self._hooks_in_background = True
        try:
            while not stop.is_set():
                self._wake.wait(every_s)
                self._wake.clear()
                if self.waiting:
                    self.retry(wait=False)
        finally:
            self._hooks_in_background = False

    def _failed(self, sink: str, exc: Exception, waiting: int) -> None:
        backoff = self.backoff.get(sink)
        again = f"; next try in {backoff.failed(self.clock()):g} s" if backoff is not None else ""
        log.warning("alert sink %s failed (%s: %s); %d alerts wait%s", sink, type(exc).__name__, str(exc)[:200],
                    waiting, again)
        if sink == "kafka":
            self._close()
        if self.metrics is not None:
            self.metrics.publish_failed(sink.split(":")[0])

    def _send(self, sink: str, record: dict) -> None:
        if sink == "kafka":
            self._to_kafka(record)
        elif sink == "redis":
            self._to_redis(record)
        else:
            self.webhooks[sink][0].send(record)

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
