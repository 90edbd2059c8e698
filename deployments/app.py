"""The Ray Serve application: ``build_app(args) -> Application``.

Two deployments, and a third on a cluster:

- ``Gateway`` (the HTTP ingress, FastAPI): ``POST /v1/query``, ``GET /v1/cameras``, ``GET /healthz``.
  It validates the request, reads the camera's window from the Redis token cache (timed) and hands
  the segments to the LLM deployment.
- ``LLMDeployment``: wraps :class:`deployments.llm.LLMEngine`; requests are batched with
  ``@serve.batch`` and the batch is sized by visual tokens, not by request count. Replicas, CPUs and
  GPUs per replica and ``autoscaling_config`` come from the app args.
- ``CameraFleet`` (only with ``fleet`` args, as on Kubernetes): one replica that owns the camera
  actors. It reads the camera list (``fleet.cameras``, or ``fleet.cameras_file``: a mounted ConfigMap
  it re-reads every ``reload_s``), starts, stops and restarts actors to match it, and restarts a
  dead actor's run, which resumes from the committed offset. ``GET /v1/fleet`` shows it.

A Kubernetes ``serveConfigV2`` reaches it through ``import_path: deployments.app:build_app``.
(No ``from __future__ import annotations`` here: FastAPI must see the request model as a class.)
"""


import logging
import threading
import time
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.camera import CameraConfig, KafkaSettings, load_cameras
from actors.token_cache import RedisSettings, RedisTokenStore
from streamdycoke.segment import SegmentFormatError, encode_segment

from .llm import LLMEngine, LLMRequest

__all__ = ["AppArgs", "FleetArgs", "QueryRequest", "build_app"]

log = logging.getLogger(__name__)


class FleetArgs(BaseModel):
    """The camera actors, when the Serve app owns them (a cluster); the demo runs its own supervisor."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    cameras: list[CameraConfig] = Field(default_factory=list)
    cameras_file: str | None = Field(None, description="YAML/JSON camera list re-read every reload_s "
                                                         "(a mounted ConfigMap); used instead of `cameras`")
    actor_options: dict[str, Any] = Field(default_factory=dict,
                                          description='Ray options per camera actor, e.g. {"resources": {"camera": 1}}')
    reload_s: float = Field(10.0, gt=0)
    num_cpus: float = Field(0.1, gt=0)


class AppArgs(BaseModel):
    """Arguments of :func:`build_app` (a ``serveConfigV2`` passes them as ``args``)."""

    redis: RedisSettings = Field(default_factory=RedisSettings)
    model: str | None = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
    dtype: str = "float32"
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    autoscaling_config: dict[str, Any] | None = None
    max_batch_tokens: int = Field(8192, gt=0, description="visual tokens per LLM batch")
    batch_wait_timeout_s: float = Field(0.05, ge=0)
    gateway_num_cpus: float = Field(0.25, gt=0)
    max_window_s: float = Field(600.0, gt=0)
    fleet: FleetArgs | None = None


class QueryRequest(BaseModel):
    camera: str = Field(min_length=1, max_length=200)
    question: str = Field(min_length=1, max_length=4000)
    window_s: float = Field(10.0, gt=0)
    max_new_tokens: int = Field(32, ge=1, le=1024)


@serve.deployment
class LLMDeployment:
    def __init__(self, args: dict) -> None:
        a = AppArgs(**args)
        from actors.metrics import QueryMetrics

        self.engine = LLMEngine(a.model, a.dtype)
        self.metrics = QueryMetrics()
        self.generate.set_max_batch_size(a.max_batch_tokens)
        self.generate.set_batch_wait_timeout_s(a.batch_wait_timeout_s)

    @serve.batch(max_batch_size=8192, batch_wait_timeout_s=0.05,
                 batch_size_fn=lambda reqs: sum(r.num_tokens for r in reqs))
    async def generate(self, reqs: list[LLMRequest]) -> list[dict]:
        self.metrics.batch(len(reqs), sum(r.num_tokens for r in reqs))
        return [r.__dict__ for r in self.engine.answer(reqs)]


@serve.deployment(num_replicas=1)
class CameraFleet:
    """Owns one camera actor per configured camera and keeps them matching the camera list."""

    def __init__(self, args: dict) -> None:
        from actors.metrics import FleetMetrics
        from actors.ray_actor import CameraSupervisor

        a = AppArgs(**args)
        self.fleet = a.fleet
        self.sup = CameraSupervisor(self.fleet.kafka, a.redis, self.fleet.actor_options)
        self.metrics = FleetMetrics()
        self.last_error: str | None = None
        self.reconciles = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="camera-fleet", daemon=True)
        self._thread.start()

    def _cameras(self) -> list[CameraConfig]:
        if self.fleet.cameras_file:
            return load_cameras(self.fleet.cameras_file)
        return self.fleet.cameras

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:  # status() reads what this changes
                self._reconcile_once()
            self._stop.wait(self.fleet.reload_s)

    def _reconcile_once(self) -> None:
        try:
            cameras = self._cameras()
        except (OSError, ValueError) as exc:  # a bad edit: keep the running cameras, say so, count it
            error = f"camera list: {exc}"
            if error != self.last_error:  # once per bad edit, not once per round
                log.error("camera fleet: %s; keeping the running cameras", error)
                self.metrics.config_error()
            self.last_error, cameras = error, None
        try:
            if cameras is not None:
                changes = self.sup.reconcile(cameras)
                if any(changes.values()):
                    log.info("camera fleet: %s", changes)
                self.last_error = f"cameras failed to start: {changes['failed']}" if changes["failed"] else None
            self.sup.supervise()
            self.metrics.publish(len(self.sup.actors), self.sup.restarts)
            self.reconciles += 1
        except Exception as exc:  # Ray trouble: reported, tried again next round
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("camera fleet: reconcile failed")

    def check_health(self) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("camera fleet loop is not running")

    def status(self) -> dict:
        with self._lock:
            return {"cameras": {cam: {"restarts": self.sup.restarts.get(cam, 0),
                                      "config": self.sup.configs[cam].model_dump()} for cam in sorted(self.sup.actors)},
                    "reconciles": self.reconciles, "last_error": self.last_error}

    def __del__(self) -> None:
        self._stop.set()
        try:
            self.sup.shutdown()
        except Exception:  # the cluster may be going down with us
            pass


api = FastAPI(title="StreamDyCoke")


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(self, llm: Any, args: dict, fleet: Any = None) -> None:
        self.llm = llm
        self.fleet = fleet
        self.args = AppArgs(**args)
        self.store = RedisTokenStore(self.args.redis)
        from actors.metrics import QueryMetrics

        self.metrics = QueryMetrics()

    @api.get("/healthz")
    def health(self) -> dict:
        self.store.client.ping()
        return {"status": "ok"}

    @api.get("/v1/fleet")
    async def fleet_status(self) -> dict:
        if self.fleet is None:
            raise HTTPException(404, "this app runs no camera fleet (its cameras are supervised elsewhere)")
        return await self.fleet.status.remote()

    @api.get("/v1/cameras")
    def cameras(self) -> dict:
        out = {}
        for cam in self.store.streams():
            stats = self.store.get_stats(cam) or {}
            tokens_in, kept = stats.get("tokens_in") or 0, stats.get("tokens_kept") or 0
            out[cam] = {
                "frames_cached": self.store.client.zcard(self.store._keys(cam)[1]),
                "last_frame": self.store.last_frame_index(cam),
                "frames_consumed": stats.get("consumed"), "frames_processed": stats.get("processed"),
                "lag": stats.get("lag"), "keep_ratio": kept / tokens_in if tokens_in else None,
                "cache_bytes": self.store.nbytes(cam),
            }
        return {"cameras": out}

    @api.post("/v1/query")
    async def query(self, q: QueryRequest) -> dict:
        try:
            out = await self._query(q)
        except HTTPException as exc:
            self.metrics.query(f"http_{exc.status_code}")
            raise
        self.metrics.query("ok", out["latency_ms"])
        return out

    async def _query(self, q: QueryRequest) -> dict:
        t0 = time.perf_counter()
        if q.window_s > self.args.max_window_s:
            raise HTTPException(400, f"window_s {q.window_s} is over the limit {self.args.max_window_s}")
        if self.store.last_frame_index(q.camera) is None:
            raise HTTPException(404, f"unknown camera {q.camera!r}: no frames cached")
        newest = self.store.client.zrevrange(self.store._keys(q.camera)[1], 0, 0, withscores=True)[0][1]
        try:
            segs = self.store.read(q.camera, newest - q.window_s, newest)
        except SegmentFormatError as exc:
            raise HTTPException(500, f"corrupt token cache entry for {q.camera!r}: {exc}") from None
        t_fetch = time.perf_counter() - t0
        req = LLMRequest(q.camera, q.question, q.max_new_tokens, [encode_segment(s) for s in segs])
        try:
            res = await self.llm.generate.remote(req)
        except ValueError as exc:  # e.g. the camera's encoder does not match the LLM
            raise HTTPException(409, str(exc)) from None
        return {
            "camera": q.camera, "question": q.question, "answer": res["answer"],
            "usage": {"visual_tokens": res["visual_tokens"],
                      "visual_tokens_uncompressed": res["visual_tokens_uncompressed"],
                      "frames": len(segs), "new_tokens": res["new_tokens"]},
            "latency_ms": {"cache_fetch": 1e3 * t_fetch, "queue": res["queue_ms"], "prefill": res["prefill_ms"],
                           "decode": res["decode_ms"], "total": 1e3 * (time.perf_counter() - t0)},
            "batch_size": res["batch_size"],
        }


def build_app(args: dict | AppArgs | None = None) -> Application:
    """The Serve application for ``serve run`` / ``serveConfigV2`` (``deployments.app:build_app``)."""
    a = args if isinstance(args, AppArgs) else AppArgs(**(args or {}))
    opts: dict[str, Any] = {"ray_actor_options": {"num_cpus": a.num_cpus, "num_gpus": a.num_gpus}}
    if a.autoscaling_config:
        opts["autoscaling_config"] = a.autoscaling_config
    else:
        opts["num_replicas"] = a.num_replicas
    raw = a.model_dump(mode="json")
    if a.redis.password is not None:
        raw["redis"]["password"] = a.redis.password.get_secret_value()
    llm = LLMDeployment.options(**opts).bind(raw)
    fleet = None
    if a.fleet is not None:
        fleet = CameraFleet.options(ray_actor_options={"num_cpus": a.fleet.num_cpus}).bind(raw)
    return Gateway.options(ray_actor_options={"num_cpus": a.gateway_num_cpus}).bind(llm, raw, fleet)
