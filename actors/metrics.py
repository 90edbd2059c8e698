"""Every pipeline metric, defined once. Prometheus names carry their unit; Ray's exporter adds the
``ray_`` prefix (scrape Ray's metrics port, see the README).

Per camera (tag ``camera``): frames consumed / processed / skipped / dead-lettered, tokens in and
kept, frame-to-cache latency, consumer lag, cache bytes. Per query (Serve, which adds the deployment
and replica tags): latency per stage (tag ``stage``: cache_fetch, queue, prefill, decode, total),
queries by ``status``, and the LLM's batch size in requests and in visual tokens. Ray exports a counter only after its first
increment (``Counter.inc`` refuses 0), so queries over counters that may not have moved yet should
add ``or vector(0)``.

Size: every metric the project exports is defined here, once, so that their names, units and labels (which
dashboards and alert rules reference) are reviewed in one place; its code is under 300 lines.
"""

from __future__ import annotations

__all__ = ["CAMERA_METRIC_NAMES", "CameraMetrics", "ENCODER_METRIC_NAMES", "EncoderMetrics", "FLEET_METRIC_NAMES", "FleetMetrics", "INGEST_METRIC_NAMES", "IngestMetrics", "METRIC_NAMES",
           "QUERY_METRIC_NAMES", "QueryMetrics", "REPLICA_METRIC_NAMES", "STANDING_METRIC_NAMES", "StandingMetrics"]

CAMERA_METRIC_NAMES = (
    "streamdycoke_frames_consumed_total",
    "streamdycoke_frames_processed_total",
    "streamdycoke_frames_skipped_total",
    "streamdycoke_frames_dead_lettered_total",
    "streamdycoke_tokens_in_total",
    "streamdycoke_tokens_kept_total",
    "streamdycoke_frame_to_cache_seconds",
    "streamdycoke_frame_stage_seconds",
    "streamdycoke_consumer_lag_frames",
    "streamdycoke_cache_bytes",
    "streamdycoke_camera_faults_total",
    "streamdycoke_camera_up",
    "streamdycoke_camera_node",
)
QUERY_METRIC_NAMES = (
    "streamdycoke_query_stage_seconds",
    "streamdycoke_queries_total",
    "streamdycoke_llm_batch_size_requests",
    "streamdycoke_llm_batch_visual_tokens",
)
# The ingest process is not a Ray process: it serves these itself (prometheus-client, no ``ray_`` prefix)
# on ``streamdycoke ingest --metrics-port``.
INGEST_METRIC_NAMES = (
    "streamdycoke_ingest_frames_published_total",
    "streamdycoke_ingest_source_failures_total",
    "streamdycoke_ingest_corrupt_packets_total",
    "streamdycoke_ingest_last_frame_timestamp_seconds",
    "streamdycoke_ingest_config_errors_total",
    "streamdycoke_ingest_send_failures_total",
    "streamdycoke_ingest_resume_failures_total",
    "streamdycoke_ingest_frames_skipped_total",
    "streamdycoke_ingest_bytes_sent_total",
    "streamdycoke_frame_stage_seconds",
)
# The Serve deployment that owns the camera actors on a cluster (deployments.fleet.CameraFleet).
FLEET_METRIC_NAMES = (
    "streamdycoke_fleet_cameras",
    "streamdycoke_fleet_cameras_refused",
    "streamdycoke_fleet_cameras_unplaced",
    "streamdycoke_fleet_actor_restarts_total",
    "streamdycoke_fleet_config_errors_total",
    "streamdycoke_fleet_nodes",
    "streamdycoke_fleet_nodes_lost",
)
# Every Serve replica that names its node (the LLM's and the encoder's).
REPLICA_METRIC_NAMES = ("streamdycoke_replica_node",)
# The encoder deployment (deployments.encoder), when the app runs one.
ENCODER_METRIC_NAMES = (
    "streamdycoke_encoder_batch_frames",
    "streamdycoke_encoder_frames_total",
    "streamdycoke_encoder_batch_seconds",
)
# Standing queries (actors.standing), exported by the camera actor that runs them.
STANDING_METRIC_NAMES = (
    "streamdycoke_alerts_total",
    "streamdycoke_standing_alert_active",
    "streamdycoke_standing_query_seconds",
    "streamdycoke_standing_query_rounds_total",
    "streamdycoke_standing_query_failures_total",
    "streamdycoke_alert_publish_failures_total",
)
METRIC_NAMES = (CAMERA_METRIC_NAMES + QUERY_METRIC_NAMES + FLEET_METRIC_NAMES + ENCODER_METRIC_NAMES
                + STANDING_METRIC_NAMES + REPLICA_METRIC_NAMES)

_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.033, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
# A frame's path by stage (``streamdycoke_frame_stage_seconds{camera, stage}``), one histogram exported by
# two kinds of process: ingest (decode, sample, resize, publish; prometheus-client) and the camera actor
# (transit ... frame_to_cache, see actors.camera.CAMERA_STAGES; Ray adds ``ray_``). Sub-millisecond
# buckets: most stages take well under one.
_STAGE_LATENCY_BUCKETS = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.25, 0.5, 1.0,
                          2.5, 10.0]


class _Totals:
    """Running totals (a worker's counts since it started) turned into Counter increments: each
    :meth:`inc_to` adds what the total gained since the last call for the same key (a total that went
    down, as after a restart, starts over from it)."""

    def __init__(self) -> None:
        self._last: dict[object, float] = {}

    def inc_to(self, counter, key: object, total: float, tags: dict[str, str] | None = None) -> None:
        before = self._last.get(key, 0)
        if total > before:
            counter.inc(total - before, tags=tags)
        self._last[key] = total


def placement() -> dict[str, str | None]:
    """The Ray node this process runs on: ``{"node": id, "role": its "role" label or None}``."""
    import ray

    ctx = ray.get_runtime_context()
    return {"node": ctx.get_node_id(), "role": ctx.get_node_labels().get("role")}


def replica_node_gauge(deployment: str) -> None:
    """Name this Serve replica's node in a metric (``streamdycoke_replica_node``, 1 on its node)."""
    from ray.util.metrics import Gauge

    node = placement()
    Gauge("streamdycoke_replica_node", "1: a replica of the deployment runs on this Ray node",
          ("deployment", "node", "node_role")).set(1, tags={"deployment": deployment, "node": node["node"],
                                                          "node_role": node["role"] or ""})


class CameraMetrics:
    """Ray metrics for one camera actor; :meth:`publish` turns a worker's counters into deltas."""

    def __init__(self, camera: str) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = ("camera",)
        self._tags = {"camera": camera}
        self.counters = {
            "consumed": Counter("streamdycoke_frames_consumed_total", "frames read from the camera's topic", tags),
            "processed": Counter("streamdycoke_frames_processed_total", "frames encoded and compressed", tags),
            "skipped": Counter("streamdycoke_frames_skipped_total", "frames the sampler skipped", tags),
            "dead_lettered": Counter("streamdycoke_frames_dead_lettered_total", "malformed frames sent to the dead-letter topic", tags),
            "tokens_in": Counter("streamdycoke_tokens_in_total", "visual tokens of processed frames", tags),
            "tokens_kept": Counter("streamdycoke_tokens_kept_total", "visual tokens kept", tags),
        }
        self.frame_to_cache = Histogram("streamdycoke_frame_to_cache_seconds", "capture to token-cache write",
                                        _LATENCY_BUCKETS, tags)
        self.stage = Histogram("streamdycoke_frame_stage_seconds", "a processed frame's time by stage of its path",
                               _STAGE_LATENCY_BUCKETS, ("camera", "stage"))
        self.lag = Gauge("streamdycoke_consumer_lag_frames", "frames in the topic not yet consumed (negative: the "
                         "topic shrank below the consumer's position)", tags)
        self.cache_bytes = Gauge("streamdycoke_cache_bytes", "bytes the token cache holds for the camera", tags)
        self.faults = Counter("streamdycoke_camera_faults_total", "faults the camera recovered from, by kind "
                              "(cache, broker, topic_reset, stall, start, pipeline)", ("camera", "kind"))
        self.up = Gauge("streamdycoke_camera_up", "1 while the camera's worker runs, 0 while it recovers", tags)
        self._totals = _Totals()
        # where the camera runs: 1 on the Ray node of its actor (its id and ``role`` label); a restarted
        # actor's new node reports itself, a lost node's series go with its metrics agent
        node = placement()
        Gauge("streamdycoke_camera_node", "1: the camera's actor runs on this Ray node", ("camera", "node", "node_role")
              ).set(1, tags={**self._tags, "node": node["node"], "node_role": node["role"] or ""})

    def publish(self, counters, lag: int | None, cache_bytes: int | None, faults: dict[str, int] | None = None,
                up: bool = True) -> None:
        """Counters become deltas; gauges are set when known (``None``: unreachable right now)."""
        for name, metric in self.counters.items():
            self._totals.inc_to(metric, name, getattr(counters, name), self._tags)
        for stage, values in counters.times.drain().items():
            tags = {**self._tags, "stage": stage}
            for v in values:
                self.stage.observe(v, tags=tags)
                if stage == "frame_to_cache":
                    self.frame_to_cache.observe(v, tags=self._tags)
        for kind, n in (faults or {}).items():
            self._totals.inc_to(self.faults, ("fault", kind), n, {**self._tags, "kind": kind})
        if lag is not None:
            self.lag.set(lag, tags=self._tags)
        if cache_bytes is not None:
            self.cache_bytes.set(cache_bytes, tags=self._tags)
        self.up.set(1 if up else 0, tags=self._tags)


_STAGE_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


class QueryMetrics:
    """Serve-side metrics (created inside a replica)."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.stage = metrics.Histogram("streamdycoke_query_stage_seconds", "query latency by stage",
                                       boundaries=_STAGE_BUCKETS, tag_keys=("stage",))
        self.queries = metrics.Counter("streamdycoke_queries_total", "queries by outcome", tag_keys=("status",))
        self.batch_requests = metrics.Histogram("streamdycoke_llm_batch_size_requests", "requests per LLM batch",
                                                boundaries=[1, 2, 4, 8, 16, 32, 64])
        self.batch_tokens = metrics.Histogram("streamdycoke_llm_batch_visual_tokens", "visual tokens per LLM batch",
                                              boundaries=[256, 1024, 4096, 8192, 16384, 65536])

    def query(self, status: str, stages_ms: dict | None = None) -> None:
        self.queries.inc(1, tags={"status": status})
        for stage, ms in (stages_ms or {}).items():
            self.stage.observe(ms / 1e3, tags={"stage": stage})

    def batch(self, requests: int, visual_tokens: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_tokens.observe(visual_tokens)


class StandingMetrics:
    """A camera's standing queries: alerts by state, trigger-to-decision latency by trigger, rounds (and
    whether the rule could read the answer), failures by reason, alerts a sink could not take."""

    def __init__(self, camera: str) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = ("camera", "query")
        self._default = {"camera": camera}
        self.active_gauge = Gauge("streamdycoke_standing_alert_active", "1 while a standing query's alert is raised",
                                  tags)
        self.alerts = Counter("streamdycoke_alerts_total", "alerts raised or cleared by standing queries",
                              tags + ("state",))
        self.latency = Histogram("streamdycoke_standing_query_seconds", "a standing query's trigger (scheduled "
                                 "instant, or the cut frame's capture) to its decision", _LATENCY_BUCKETS,
                                 tags + ("trigger",))
        self.rounds = Counter("streamdycoke_standing_query_rounds_total", "standing query rounds answered, by "
                              "whether the rule could read the answer", tags + ("readable",))
        self.failures = Counter("streamdycoke_standing_query_failures_total", "standing query rounds that failed",
                                tags + ("reason",))
        self.publish_failures = Counter("streamdycoke_alert_publish_failures_total", "alert sends that failed "
                                        "(kept and retried) or alerts dropped past the pending bound",
                                        ("camera", "sink", "dropped"))
        for m in (self.alerts, self.latency, self.rounds, self.failures, self.publish_failures, self.active_gauge):
            m.set_default_tags(self._default)

    def round(self, query: str, trigger: str, seconds: float, readable: bool = True) -> None:
        self.latency.observe(seconds, tags={"query": query, "trigger": trigger})
        self.rounds.inc(1, tags={"query": query, "readable": str(readable).lower()})

    def alert(self, query: str, state: str) -> None:
        self.alerts.inc(1, tags={"query": query, "state": state})
        self.active(query, state == "raised")

    def active(self, query: str, on: bool) -> None:
        self.active_gauge.set(1.0 if on else 0.0, tags={"query": query})

    def failed(self, query: str, reason: str) -> None:
        self.failures.inc(1, tags={"query": query, "reason": reason})

    def publish_failed(self, sink: str, dropped: bool = False) -> None:
        self.publish_failures.inc(1, tags={"sink": sink, "dropped": str(dropped).lower()})


class EncoderMetrics:
    """Metrics of the encoder deployment (created inside its replica)."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.batch = metrics.Histogram("streamdycoke_encoder_batch_frames", "frames per encoder forward pass",
                                       boundaries=[1, 2, 4, 8, 16, 32, 64])
        self.frames = metrics.Counter("streamdycoke_encoder_frames_total", "frames the encoder deployment encoded")
        self.seconds = metrics.Histogram("streamdycoke_encoder_batch_seconds", "time of one forward pass",
                                         boundaries=_STAGE_BUCKETS)

    def forward(self, frames: int, seconds: float) -> None:
        self.batch.observe(frames)
        self.frames.inc(frames)
        self.seconds.observe(seconds)


class FleetMetrics:
    """Metrics of the camera fleet (created inside its Serve replica)."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge

        self.cameras = Gauge("streamdycoke_fleet_cameras", "camera actors the fleet runs")
        self.refused = Gauge("streamdycoke_fleet_cameras_refused",
                             "configured cameras not started because their encoder cannot feed the LLM")
        self.unplaced = Gauge("streamdycoke_fleet_cameras_unplaced",
                              "camera actors the cluster has not placed (no free camera slot): their frames wait")
        self.restarts = Counter("streamdycoke_fleet_actor_restarts_total", "camera actor runs restarted after a failure",
                                ("camera",))
        self.config_errors = Counter("streamdycoke_fleet_config_errors_total",
                                     "camera lists that could not be read or validated")
        self.nodes = Gauge("streamdycoke_fleet_nodes", "Ray nodes of the cluster, alive or dead (a dead one "
                           "is listed until Ray forgets it)", ("state",))
        # a gauge, not a counter: set from the start (at 0), so the first loss is a change Prometheus sees
        self.nodes_lost = Gauge("streamdycoke_fleet_nodes_lost", "Ray nodes seen alive and then dead (a lost "
                                "machine, an evicted pod) since this fleet controller started")
        self._totals = _Totals()

    def publish(self, cameras: int, restarts: dict[str, int], refused: int = 0, unplaced: int = 0,
                nodes: dict[str, int] | None = None, nodes_lost: int = 0) -> None:
        """Gauges set, counters turned into deltas; ``nodes``: ``{"alive": n, "dead": m}``."""
        self.cameras.set(cameras)
        self.refused.set(refused)
        self.unplaced.set(unplaced)
        for state, n in (nodes or {}).items():
            self.nodes.set(n, tags={"state": state})
        self.nodes_lost.set(nodes_lost)
        for cam, n in restarts.items():
            self._totals.inc_to(self.restarts, cam, n, {"camera": cam})

    def publish_fleet(self, sup) -> None:
        """:meth:`publish` what a :class:`~actors.supervisor.CameraSupervisor` knows after its round."""
        self.publish(len(sup.actors), sup.restarts, len(sup.refused), len(sup.unplaced), sup.node_watch.counts(),
                     sup.nodes_lost)

    def config_error(self) -> None:
        self.config_errors.inc(1)


class IngestMetrics:
    """Metrics of ``streamdycoke ingest`` (one process may publish several cameras), in their own registry.

    ``serve(port)`` starts the HTTP endpoint Prometheus scrapes.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        tags = ("camera",)
        self._published = Counter("streamdycoke_ingest_frames_published", "decoded frames published to Kafka (sent, "
                                  "or accounted for as skipped by the edge sampler)", tags, registry=self.registry)
        self._skipped = Counter("streamdycoke_ingest_frames_skipped", "frames the edge sampler skipped (never sent)",
                                tags, registry=self.registry)
        self._bytes = Counter("streamdycoke_ingest_bytes_sent", "bytes of messages the broker acknowledged", tags,
                              registry=self.registry)
        self._failures = Counter("streamdycoke_ingest_source_failures", "times the source failed and was reopened",
                                 tags, registry=self.registry)
        self._corrupt = Counter("streamdycoke_ingest_corrupt_packets", "corrupt packets skipped while decoding",
                                tags, registry=self.registry)
        self._last = Gauge("streamdycoke_ingest_last_frame_timestamp_seconds",
                           "capture time (unix seconds) of the last frame published", tags, registry=self.registry)

        self._send_failures = Counter("streamdycoke_ingest_send_failures", "frame sends that failed and were "
                                      "retried (never counted as published)", tags, registry=self.registry)
        self._resume_failures = Counter("streamdycoke_ingest_resume_failures", "reads of where the camera's topic "
                                        "ends that the broker did not answer (retried; nothing is sent until one "
                                        "succeeds)", tags, registry=self.registry)
        from prometheus_client import Histogram

        self._stage = Histogram("streamdycoke_frame_stage_seconds", "a frame's time by stage of its path (ingest's "
                                "stages: decode, sample, resize, publish)", ("camera", "stage"),
                                buckets=_STAGE_LATENCY_BUCKETS, registry=self.registry)
        self._config_errors = Counter("streamdycoke_ingest_config_errors",
                                      "camera files that could not be read or validated", registry=self.registry)

    def config_error(self) -> None:
        self._config_errors.inc()

    def camera_started(self, camera: str) -> None:
        """Export the camera's series at 0 from the start (dashboards then see them before any failure)."""
        for metric in (self._published, self._skipped, self._bytes, self._failures, self._corrupt, self._send_failures,
                       self._resume_failures):
            metric.labels(camera)

    def published(self, camera: str, capture_ts: float, frames: int = 1, skipped: int = 0, nbytes: int = 0) -> None:
        """A message acknowledged: ``frames`` ingested, ``skipped`` of them by the edge sampler (not sent)."""
        self._published.labels(camera).inc(frames)
        if skipped:
            self._skipped.labels(camera).inc(skipped)
        self._bytes.labels(camera).inc(nbytes)
        self._last.labels(camera).set(capture_ts)

    def stage(self, camera: str, stage: str, seconds: float) -> None:
        self._stage.labels(camera, stage).observe(seconds)

    def send_failed(self, camera: str) -> None:
        self._send_failures.labels(camera).inc()

    def resume_failed(self, camera: str) -> None:
        self._resume_failures.labels(camera).inc()

    def source_failed(self, camera: str, corrupt_packets: int = 0) -> None:
        self._failures.labels(camera).inc()
        self.corrupt(camera, corrupt_packets)

    def corrupt(self, camera: str, packets: int) -> None:
        if packets:
            self._corrupt.labels(camera).inc(packets)

    def serve(self, port: int, addr: str = "0.0.0.0"):
        """Serve ``/metrics`` on ``addr:port``; returns the server (``.shutdown()`` stops it)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
