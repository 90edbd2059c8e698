"""The serving side's settings: the Serve app's arguments and the ``streamdycoke run`` system file.

They nest the camera side's models (:class:`~actors.config.KafkaSettings`,
:class:`~actors.config.RedisSettings`, :class:`~actors.config.CameraConfig`) and the core's
:class:`~streamdycoke.EncoderSpec`; nothing is copied, so each default lives in one place.

The application owns the encoder: ``AppArgs.model`` names the video LLM, whose weights the LLM
replicas load and whose vision tower every camera encodes with unless it names its own encoder (then
it must be the same tower from the same weights, or the camera is refused when the fleet reconciles).
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from actors.config import CameraConfig, IngestSettings, KafkaSettings, RedisSettings
from streamdycoke import EncoderSpec

__all__ = ["AppArgs", "FleetArgs", "SystemConfig"]

_STRICT = ConfigDict(extra="forbid")


class FleetArgs(BaseModel):
    """The camera actors, when the Serve app owns them (a cluster); the demo runs its own supervisor."""

    model_config = _STRICT

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    cameras: list[CameraConfig] = Field(default_factory=list)
    cameras_file: str | None = Field(None, description="YAML/JSON camera list re-read every reload_s "
                                                         "(a mounted ConfigMap); used instead of `cameras`")
    actor_options: dict[str, Any] = Field(default_factory=dict,
                                          description='Ray options per camera actor, e.g. {"resources": {"camera": 1}}')
    reload_s: float = Field(10.0, gt=0)
    num_cpus: float = Field(0.1, gt=0)


class EncoderServiceArgs(BaseModel):
    """The vision encoder as a Serve deployment (:mod:`deployments.encoder`): camera actors send the frames they
    process there, batched across cameras (GPU replicas in production)."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0, description="per replica")
    num_gpus: float = Field(0.0, ge=0, description="per replica")
    resources: dict[str, float] = Field(default_factory=dict, description=(
        'custom Ray resources per replica, e.g. {"accelerator": 1}: the replicas land only on nodes that declare them'))
    max_batch_size: int = Field(16, ge=1, description="frames per forward pass at most")
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="how long a batch's first frame waits for others")
    autoscaling_config: dict[str, Any] | None = None


class AppArgs(BaseModel):
    """Arguments of :func:`deployments.app.build_app` (a ``serveConfigV2`` passes them as ``args``)."""

    model_config = _STRICT

    model: EncoderSpec = Field(default_factory=EncoderSpec,
                               description="the video LLM: its weights serve the LLM replicas, its vision tower the cameras")
    redis: RedisSettings = Field(default_factory=RedisSettings)
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, gt=0, description="per LLM replica")
    num_gpus: float = Field(0.0, ge=0, description="per LLM replica")
    resources: dict[str, float] = Field(default_factory=dict, description=(
        'custom Ray resources per LLM replica, e.g. {"accelerator": 1}: the replicas land only on nodes that '
        "declare them (an accelerator group)"))
    autoscaling_config: dict[str, Any] | None = None
    max_batch_tokens: int = Field(8192, gt=0, description="visual tokens per LLM batch")
    batch_wait_timeout_s: float = Field(0.05, ge=0)
    kept_windows: int = Field(16, ge=0, description=(
        "KV caches an LLM replica keeps for incremental prefill (one per camera and standing-query window; "
        "least recently used dropped first); a camera's requests are routed to the replica holding its caches"))
    gateway_num_cpus: float = Field(0.25, gt=0)
    gateway_max_ongoing_requests: int = Field(256, gt=0, description=(
        "requests one gateway replica holds at once: its handlers are async, and each open GET /v1/alerts "
        "stream holds one for as long as it is open (Serve's default, 5, would let 5 listeners block every query)"))
    api_token: SecretStr | None = Field(None, description="bearer token every request but /healthz must carry; "
                                                          "default: the STREAMDYCOKE_API_TOKEN environment variable")
    allow_anonymous: bool = Field(False, description="serve without a token (a closed development setup only)")
    max_request_bytes: int = Field(64 * 1024, gt=0, description="larger request bodies get a 413")
    query_timeout_s: float = Field(120.0, gt=0, description="a query the LLM has not answered by then gets a "
                                                            "retryable 503")
    fleet: FleetArgs | None = None
    encoder: EncoderServiceArgs | None = Field(None, description=(
        "run the vision encoder as a deployment batching frames across cameras; None: each camera actor "
        "encodes its own frames (small setups, cheap encoders)"))

    @field_validator("model")
    @classmethod
    def _llm_family(cls, model: EncoderSpec) -> EncoderSpec:
        if model.name != "llava-onevision":
            raise ValueError(f"the LLM must be a llava-onevision model (got encoder {model.name!r})")
        return model


class SystemConfig(BaseModel):
    """``streamdycoke run --config FILE`` (YAML or JSON): the pipeline against existing Kafka, Redis and Ray."""

    model_config = _STRICT

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    app: AppArgs = Field(default_factory=AppArgs, description="the Serve app (LLM, Redis, replicas, GPUs)")
    ingest: IngestSettings | None = Field(default_factory=IngestSettings,
                                          description="ingest cameras that have a source; null: ingest runs elsewhere")
    cameras: list[CameraConfig] = Field(min_length=1)
    ray_address: str = "auto"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    deploy_timeout_s: float = Field(600.0, gt=0, description=(
        "give up, saying what Serve waits for, when the app is not running by then (a replica whose resources "
        "the cluster never offers, e.g. an accelerator node that never joins, would otherwise wait forever)"))
