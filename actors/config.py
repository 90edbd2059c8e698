"""The camera side's settings: pydantic models at the service edge, nesting the core's frozen dataclasses.

One model per idea, one default per setting:

- :class:`KafkaSettings`: the broker and the topics (used by ingest, camera actors and the fleet);
- :class:`RedisSettings`: the token cache (used by camera actors and the Serve app);
- :class:`CameraConfig`: one camera, nesting the core's :class:`~streamdycoke.StreamConfig`,
  :class:`~streamdycoke.SamplerConfig`, :class:`~streamdycoke.PolicySpec` and, optionally,
  :class:`~streamdycoke.EncoderSpec` (None: the application's model, so cameras encode with the vision
  tower of the LLM that reads their tokens);
- :class:`IngestSettings`: what ``streamdycoke ingest`` does with a source.

Every model refuses unknown fields, so a misspelt key in a config file is an error that names it,
not a setting silently left at its default. Settings cross Ray as these objects (they pickle);
secrets stay :class:`~pydantic.SecretStr` until the one place that opens a connection.

Size: over 300 lines by its field descriptions, which are the configuration's reference (the CLI's help and
the docs come from them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from streamdycoke import EncoderSpec, PipelineConfig, PolicySpec, SamplerConfig, StreamConfig
from streamdycoke.encoders.differential import DifferentialConfig

from .queries import StandingQuery, parse_event_qa_prompt
from .names import CAMERA_ID_MAX, ID_PATTERN
from .webhooks import Webhook
from .snapshots import SnapshotConfig

EVENT_QA_ENCODER = "efficientnet-lite0"  # what the event-QA answerer reads (actors.answerers)

__all__ = ["CameraConfig", "CamerasFile", "EncodingSettings", "IngestSettings", "KafkaSettings", "RedisSettings", "encoder_refusal",
           "load_cameras", "read_config_file"]

_STRICT = ConfigDict(extra="forbid")


def _env_secret(name: str) -> SecretStr | None:
    """A secret from the environment (where Kubernetes puts a Secret), never from a config file in Git."""
    value = os.environ.get(name)
    return SecretStr(value) if value else None


class KafkaSettings(BaseModel):
    """The broker, and the topics the pipeline reads and writes."""

    model_config = _STRICT

    bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port...] of the brokers")
    topic_prefix: str = Field("frames.", description="a camera's frames go to topic prefix + camera id")
    dead_letter_topic: str = "frames.dead-letter"
    alerts_topic: str = Field("streamdycoke.alerts", description="standing queries' alerts (JSON, schema "
                                                                   "streamdycoke.alert v1; key: the camera id)")
    group_prefix: str = Field("streamdycoke-camera-", description="offsets are committed under prefix + camera id")
    max_poll_records: int = Field(32, gt=0, description="bounded batch: at most this many frames in memory")
    fetch_max_wait_ms: int = Field(10, ge=0, le=10_000, description=(
        "longest a camera's fetch waits at the broker for data: a bound on Kafka transit where the broker answers "
        "only at this deadline (the embedded tansu does), and the idle fetch rate per camera (1000 / this per "
        "second); Kafka itself answers as soon as a frame arrives"))
    replication_factor: int = Field(1, ge=1, description="of topics the pipeline creates (3 on a real cluster)")
    max_message_bytes: int = Field(16 << 20, gt=0, description="largest frame message; the topics the pipeline "
                                                               "creates, producers and consumers all use it")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(default_factory=lambda: _env_secret("STREAMDYCOKE_KAFKA_PASSWORD"),
                                            description="default: $STREAMDYCOKE_KAFKA_PASSWORD (a Kubernetes Secret)")
    ssl_cafile: str | None = Field(None, description="CA bundle that signed the brokers' certificates")
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _security(self) -> "KafkaSettings":
        if self.security_protocol.startswith("SASL_") and not (self.sasl_mechanism and self.sasl_username
                                                               and self.sasl_password):
            raise ValueError(f"{self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password")
        return self

    def topic_for(self, camera: str) -> str:
        return f"{self.topic_prefix}{camera}"

    def client_kwargs(self) -> dict:
        """Connection settings for every kafka-python client (consumer, producer, admin): the one place
        the SASL password is unwrapped."""
        kw: dict = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL_"):
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                      sasl_plain_password=self.sasl_password.get_secret_value())
        if self.security_protocol.endswith("SSL"):
            kw.update(ssl_check_hostname=self.ssl_check_hostname)
            if self.ssl_cafile:
                kw["ssl_cafile"] = self.ssl_cafile
        return kw


class RedisSettings(BaseModel):
    """Where the token cache lives and how much it keeps."""

    model_config = _STRICT

    url: str = Field("redis://127.0.0.1:6379/0", description="without credentials: they go in username/password")
    cluster: bool = Field(default_factory=lambda: os.environ.get("STREAMDYCOKE_REDIS_CLUSTER", "") in ("1", "true"),
                          description=(
        "the url is a seed node of a Redis Cluster (every camera's keys share a hash tag, so its writes stay "
        "atomic on one slot); default: $STREAMDYCOKE_REDIS_CLUSTER is 1 (the k8s redis-cluster component sets it)"))
    username: str | None = Field(None, description="ACL user (Redis 6+); None: the default user")
    password: SecretStr | None = Field(default_factory=lambda: _env_secret("STREAMDYCOKE_REDIS_PASSWORD"),
                                       description="default: $STREAMDYCOKE_REDIS_PASSWORD (a Kubernetes Secret)")
    tls: bool = False
    tls_ca_certs: str | None = None
    key_prefix: str = "sdk"
    retention_s: float = Field(600.0, gt=0, description="keep frames this far behind a camera's newest; also the "
                                                        "longest window a query may ask for")
    max_bytes_per_camera: int = Field(256 * 2**20, gt=0)
    retention_every_s: float = Field(1.0, ge=0, description=(
        "apply retention to a camera at most this often (it costs four round trips, more than the write itself); "
        "the bounds are then exceeded by at most this long's frames"))
    socket_timeout_s: float = Field(5.0, gt=0)
    alerts_max: int = Field(10_000, gt=0, description="alerts the alert stream keeps (GET /v1/alerts replays them)")
    evidence_ttl_s: float = Field(7 * 86400.0, gt=0, description=(
        "how long an alert's evidence snapshot is kept (copied when the alert is raised, so it outlives the "
        "frames' retention_s)"))


class EncodingSettings(BaseModel):
    """Where a camera's processed frames are encoded, and how.

    ``at``: ``auto`` (the application's encoder service when it runs one, else the camera's own actor),
    ``actor`` or ``service`` (a camera asking for the service where the app runs none is refused).
    ``differential``: recompute only the patches that changed (:mod:`streamdycoke.encoders.differential`;
    LLaVA-OneVision's tower); None: every processed frame encoded whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: Literal["auto", "actor", "service"] = "auto"
    differential: DifferentialConfig | None = None


class CameraConfig(BaseModel):
    """One camera, as operators configure it (an entry of the cameras file)."""

    # errors name the field without echoing the input: it may hold a webhook's secret
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    id: str = Field(min_length=1, max_length=CAMERA_ID_MAX, pattern=ID_PATTERN)
    source: str | None = Field(None, description="rtsp://, http(s):// or a file path (ingest)")
    source_options: dict[str, str] = Field(default_factory=dict,
                                           description="FFmpeg options for opening the source (ingest)")
    encoder: EncoderSpec | None = Field(None, description="None: the application's model (the LLM's own tower)")
    encoding: EncodingSettings = Field(default_factory=EncodingSettings, description=(
        "where the camera's frames are encoded (its actor or the app's encoder service) and whether differentially"))
    stream: StreamConfig = Field(default_factory=StreamConfig)
    sampler: SamplerConfig | None = Field(default_factory=SamplerConfig, description="None: every frame")
    policy: PolicySpec = Field(default_factory=PolicySpec)
    snapshot: SnapshotConfig | None = Field(default_factory=SnapshotConfig, description=(
        "a small JPEG of a processed frame about once a second, for the console and alerts' evidence "
        "(actors.snapshots); None: none"))
    standing: list[StandingQuery] = Field(default_factory=list, max_length=32, description=(
        "standing queries: questions asked of this camera's window on a period and/or on scene change, whose "
        "answers raise alerts (actors.standing)"))
    webhooks: list[Webhook] = Field(default_factory=list, max_length=8, description=(
        "endpoints every alert of this camera is POSTed to, signed (actors.webhooks); a standing query may add "
        "its own"))

    @model_validator(mode="after")
    def _pipeline_is_consistent(self) -> "CameraConfig":
        PipelineConfig(stream=self.stream, sampler=self.sampler, policy=self.policy)  # its checks, at load time
        if self.encoding.differential is not None and self.encoder is not None and self.encoder.name != "llava-onevision":
            raise ValueError(f"camera {self.id}: differential encoding is for llava-onevision's tower, not "
                             f"{self.encoder.name!r}")
        ids = [q.id for q in self.standing]
        if len(set(ids)) != len(ids):
            raise ValueError(f"camera {self.id}: standing query ids must be unique")
        names = [w.name for w in self.webhooks + [w for q in self.standing for w in q.webhooks] if w.name]
        if len(set(names)) != len(names):
            raise ValueError(f"camera {self.id}: webhook names must be unique (the camera's and its queries')")
        for q in self.standing:
            if q.on_scene_change and self.sampler is None:
                raise ValueError(f"camera {self.id}: standing query {q.id} asks on scene change, but the camera has "
                                 "no frame sampler to cut (sampler: null)")
            if q.answerer == "event-qa" and (self.encoder is None or self.encoder.name != EVENT_QA_ENCODER):
                raise ValueError(f"camera {self.id}: standing query {q.id}: the event-qa answerer reads "
                                 f"{EVENT_QA_ENCODER} tokens; set encoder: {{name: {EVENT_QA_ENCODER}}}")
            if q.answerer == "event-qa":
                try:
                    parse_event_qa_prompt(q.prompt)
                except ValueError as exc:
                    raise ValueError(f"camera {self.id}: standing query {q.id}: {exc}") from None
        return self

    @property
    def frame_sampler(self) -> SamplerConfig | None:
        """The sampler as it runs (in ingest or in the worker): under rate control it processes at least
        the budget's share of frames (:meth:`~streamdycoke.sampler.SamplerConfig.for_budget`)."""
        return None if self.sampler is None else self.sampler.for_budget(self.stream.budget_ratio)

    @property
    def answered_without_llm(self) -> bool:
        """Its standing queries are all answered without the LLM (so its encoder need not feed the LLM)."""
        return bool(self.standing) and all(q.answerer != "llm" for q in self.standing)

    def frame_size(self, default: int) -> int:
        """The side ingest resizes this camera's frames to: the input size of the encoder it names when that
        is fixed (``efficientnet-lite0``, ``pixels``), else ``default``: a camera that names none encodes
        with the app's model, and a LLaVA tower's size is in its weights' config, which an ingest host need
        not have (``IngestSettings.size`` is given for it)."""
        if self.encoder is None or self.encoder.name == "llava-onevision":
            return default
        from streamdycoke.encoders import encoder_shape

        return encoder_shape(self.encoder).input_size[0]

    def pipeline_config(self, app_model: EncoderSpec | None = None) -> PipelineConfig:
        """The core :class:`~streamdycoke.PipelineConfig` of this camera; a camera that names no encoder
        encodes with ``app_model`` (the application's LLM)."""
        encoder = self.encoder or app_model or EncoderSpec()
        return PipelineConfig(encoder=encoder, stream=self.stream, sampler=self.sampler, policy=self.policy,
                              differential=self.encoding.differential)


def encoder_refusal(camera: CameraConfig, app_model: EncoderSpec) -> str | None:
    """Why ``camera``'s tokens cannot feed the LLM ``app_model``, or None when they can.

    They can when the camera encodes with that LLM's own vision tower from the same weights (dtype and
    device may differ): anything else yields tokens the LLM was not trained on, or of another width.
    """
    enc = camera.pipeline_config(app_model).encoder
    if camera.answered_without_llm:  # read by its standing queries' own answerer; the LLM refuses it per query
        return None
    if enc.name != app_model.name:
        return f"camera {camera.id}: encoder {enc.name!r} cannot feed the {app_model.name!r} LLM (use its own tower)"
    if enc.weights != app_model.weights:
        return (f"camera {camera.id}: encoder weights {enc.weights!r} differ from the LLM's {app_model.weights!r} "
                "(tokens from other weights mean nothing to it)")
    return None


class CamerasFile(BaseModel):
    """The camera list operators edit (a Kubernetes ConfigMap, or any YAML/JSON file)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # as CameraConfig: no secret in an error

    cameras: list[CameraConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> "CamerasFile":
        ids = [c.id for c in self.cameras]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(dup)}")
        return self


class IngestSettings(BaseModel):
    """What ``streamdycoke ingest`` does with a camera's source (the broker is :class:`KafkaSettings`)."""

    model_config = _STRICT

    size: int = Field(384, gt=0, description="frames are resized to size x size (the encoder's input); a camera "
                      "that names its own encoder gets that encoder's input size")
    loop: bool = Field(False, description="loop a file (timestamps keep growing)")
    realtime: bool = Field(False, description="pace a file by its timestamps, like a live source")
    max_frames: int | None = Field(None, description="stop after this many frames")
    reconnect_backoff_s: float = Field(0.5, gt=0, description="first wait before reopening a failed source")
    reconnect_backoff_max_s: float = Field(10.0, gt=0, description="longest wait before reopening")
    max_reconnects: int | None = Field(None, description="give up after this many reopenings (None: never)")
    options: dict[str, str] = Field(default_factory=dict,
                                    description="FFmpeg options for opening the source, e.g. rtsp_transport=tcp")
    timeout_s: float | None = Field(15.0, gt=0, description="a source silent this long is dropped and reopened")
    send_timeout_s: float = Field(10.0, gt=0, description="a frame not acknowledged by the broker this long is sent "
                                                          "again (by a new producer)")
    edge_sampling: bool = Field(True, description=(
        "run the camera's frame sampler in ingest, on a thumbnail of the decoder's luma, and send only the frames "
        "it chooses (resized only then); the frames it skips are accounted for in the next message. False: send "
        "every frame and let the camera's actor sample"))
    skip_record_s: float = Field(1.0, gt=0, description=(
        "with edge sampling, skipped frames not yet accounted for by a sent frame are sent as a skip record "
        "(no pixels) after this long: the camera's counts and lag stay current while the scene is still"))


def read_config_file(path: str) -> dict:
    """A YAML or JSON (``.json``) config file as a mapping; unreadable syntax or a non-mapping top level is
    a ``ValueError`` naming the file (validation is the caller's, with pydantic)."""
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
