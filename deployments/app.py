"""The Ray Serve application: ``build_app(args) -> Application``.

Two deployments:

- ``Gateway`` (the HTTP ingress, FastAPI): ``POST /v1/query``, ``GET /v1/cameras``, ``GET /healthz``.
  It validates the request, reads the camera's window from the Redis token cache (timed) and hands
  the segments to the LLM deployment.
- ``LLMDeployment``: wraps :class:`deployments.llm.LLMEngine`; requests are batched with
  ``@serve.batch`` and the batch is sized by visual tokens, not by request count. Replicas, CPUs and
  GPUs per replica and ``autoscaling_config`` come from the app args.

A Kubernetes ``serveConfigV2`` reaches it through ``import_path: deployments.app:build_app``.
(No ``from __future__ import annotations`` here: FastAPI must see the request model as a class.)
"""


import time
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.token_cache import RedisSettings, RedisTokenStore
from streamdycoke.segment import SegmentFormatError, encode_segment

from .llm import LLMEngine, LLMRequest

__all__ = ["AppArgs", "QueryRequest", "build_app"]


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


api = FastAPI(title="StreamDyCoke")


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(self, llm: Any, args: dict) -> None:
        self.llm = llm
        self.args = AppArgs(**args)
        self.store = RedisTokenStore(self.args.redis)
        from actors.metrics import QueryMetrics

        self.metrics = QueryMetrics()

    @api.get("/healthz")
    def health(self) -> dict:
        self.store.client.ping()
        return {"status": "ok"}

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
    return Gateway.options(ray_actor_options={"num_cpus": a.gateway_num_cpus}).bind(llm, raw)
