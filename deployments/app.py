"""The Ray Serve application: ``build_app(args) -> Application``.

Two deployments, and a third on a cluster:

- ``Gateway`` (the HTTP ingress, FastAPI): ``POST /v1/query``, ``GET /v1/cameras``, ``GET /healthz``,
  ``GET /v1/alerts`` (standing queries' alerts as server-sent events, :mod:`actors.alerts`), and the OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models``
  (:mod:`deployments.openai_api`).
  It validates the request, reads the camera's window from the Redis token cache (timed) and hands
  the segments to the LLM deployment.
- ``LLMDeployment``: wraps :class:`deployments.llm.LLMEngine`; requests are batched with
  ``@serve.batch`` and the batch is sized by visual tokens, not by request count; a streamed answer
  (``generate_stream``) is generated alone, token by token; a standing query's request carries its
  camera as Serve's multiplexed model id and is answered from the KV cache this replica keeps for it. Replicas, CPUs and
  GPUs per replica and ``autoscaling_config`` come from the app args.
- ``CameraFleet`` (only with ``fleet`` args, as on Kubernetes): one replica that owns the camera
  actors. It reads the camera list (``fleet.cameras``, or ``fleet.cameras_file``: a mounted ConfigMap
  it re-reads every ``reload_s``), starts, stops and restarts actors to match it, and restarts a
  dead actor's run, which resumes from the committed offset. ``GET /v1/fleet`` shows it.

A Kubernetes ``serveConfigV2`` reaches it through ``import_path: deployments.app:build_app``.
Settings reach every deployment as the :class:`~deployments.config.AppArgs` object itself.
(No ``from __future__ import annotations`` here: FastAPI must see the request model as a class.)
"""


import asyncio
import logging
import threading
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.config import CameraConfig, load_cameras
from actors.llm_request import GenerationOptions, LLMRequest
from actors.token_cache import RedisTokenStore
from streamdycoke.segment import SegmentFormatError, encode_segment

from .config import AppArgs
from .guard import RequestGuard
from .llm import LLMEngine
from .openai_api import ChatRequest, chat_chunks, chat_completion, model_list, openai_error, parse_request

__all__ = ["QueryRequest", "build_app"]

log = logging.getLogger(__name__)


class QueryRequest(BaseModel):
    model_config = {"extra": "forbid"}

    camera: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    question: str = Field(min_length=1, max_length=4000)
    window_s: float = Field(10.0, gt=0, allow_inf_nan=False, description="seconds behind the camera's newest frame "
                                                                          "(at most the cache's retention_s)")
    max_new_tokens: int = Field(32, ge=1, le=1024)
    temperature: float = Field(0.0, ge=0, le=2, allow_inf_nan=False, description="0: greedy; above: sampled")
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, lt=2**63, description="a sampled answer, repeatable")


class _CameraCaches:
    """What Serve's model multiplexing holds for a camera on a replica: that camera's kept KV caches.
    Serve routes the camera's requests here while it is loaded, and unloads the least recently used
    camera past ``max_num_models_per_replica``; its caches go with it."""

    def __init__(self, engine: LLMEngine, camera: str) -> None:
        self.engine, self.camera = engine, camera

    def __del__(self) -> None:
        self.engine.forget(f"{self.camera}|")


@serve.deployment
class LLMDeployment:
    """The LLM replicas. Requests are batched by the visual tokens they bring (``AppArgs.max_batch_tokens``),
    counted as the answer reports them (:meth:`LLMEngine.visual_tokens`).

    A request with a ``reuse_key`` (``camera|window``) is answered by incremental prefill from the KV
    cache this replica keeps for it; its caller sends it with ``multiplexed_model_id=camera``, so Serve
    routes the camera's requests to the replica that holds its caches (once it has learned where that is
    from the replicas' reports: a camera's first requests may land on another replica, which rebuilds)."""

    def __init__(self, args: AppArgs) -> None:
        from actors.metrics import QueryMetrics

        self.engine = LLMEngine(args.model, kept_windows=args.kept_windows)
        self.replica = serve.get_replica_context().replica_id.unique_id  # answers say which replica (and cache)
        self.metrics = QueryMetrics()
        self._generate.set_max_batch_size(args.max_batch_tokens)
        self._generate.set_batch_wait_timeout_s(args.batch_wait_timeout_s)

    async def generate(self, req: LLMRequest) -> dict:
        req.num_tokens = self.engine.visual_tokens(req.segments)
        if req.reuse_key is not None:
            camera = serve.get_multiplexed_model_id() or req.camera
            await self._camera(camera)  # marks the camera as held here (Serve routes by it)
            if not req.reuse_key.startswith(f"{camera}|"):
                raise ValueError(f"reuse_key {req.reuse_key!r} is not camera {camera!r}'s")
        return {**await self._generate(req), "replica": self.replica}

    async def generate_stream(self, req: LLMRequest):
        """One request's answer token by token (call with ``handle.options(stream=True)``): dicts
        ``{"delta": text}`` as tokens are generated, then ``{"result": {...}}``. Generated alone, not in a
        batch: its tokens are sent as they come. The generation runs in a worker thread; this replica's
        event loop stays free for the batches."""
        req.num_tokens = self.engine.visual_tokens(req.segments)
        self.metrics.batch(1, req.num_tokens)
        it = self.engine.stream(req)
        while (item := await asyncio.to_thread(next, it, None)) is not None:
            yield {"result": item["result"].__dict__} if "result" in item else item

    @serve.multiplexed(max_num_models_per_replica=64)
    async def _camera(self, camera: str) -> _CameraCaches:
        return _CameraCaches(self.engine, camera)

    # sizes come from AppArgs (set in __init__), not from here
    @serve.batch(batch_size_fn=lambda reqs: sum(r.num_tokens for r in reqs))
    async def _generate(self, reqs: list[LLMRequest]) -> list[dict]:
        self.metrics.batch(len(reqs), sum(r.num_tokens for r in reqs))
        return [r.__dict__ for r in self.engine.answer(reqs)]


@serve.deployment(num_replicas=1)
class CameraFleet:
    """Owns one camera actor per configured camera and keeps them matching the camera list.

    The camera actors are owned by this replica's process (Ray's ownership): if the replica goes, they
    go with it, and the next replica starts them again; each resumes from its committed offset, and
    offsets are committed only after the frames are durably cached, so nothing is lost. :meth:`shutdown`
    stops them in order.
    """

    def __init__(self, args: AppArgs, encoder: Any = None, llm: Any = None) -> None:
        from actors.metrics import FleetMetrics
        from actors.ray_actor import CameraSupervisor

        self.fleet = args.fleet
        self.sup = CameraSupervisor(self.fleet.kafka, args.redis, args.model, self.fleet.actor_options,
                                    encoder_handle=encoder, llm_handle=llm)
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
            self.metrics.publish(len(self.sup.actors), self.sup.restarts, len(self.sup.refused),
                                 len(self.sup.unplaced))
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
                                      "config": self.sup.configs[cam].model_dump(mode="json")}
                                for cam in sorted(self.sup.actors)},
                    "refused": dict(sorted(self.sup.refused.items())),
                    "unplaced": dict(sorted(self.sup.unplaced.items())),
                    "reconciles": self.reconciles, "last_error": self.last_error}

    def shutdown(self) -> None:
        """Stop reconciling and stop every camera actor (each commits what it has cached)."""
        self._stop.set()
        self._thread.join(timeout=60)
        with self._lock:
            self.sup.shutdown()


api = FastAPI(title="StreamDyCoke")
api.add_middleware(RequestGuard)  # token and size limits: deployments.guard, configured by the Gateway


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the values (a NaN or a huge blob is not JSON to send back)."""
    errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(self, llm: Any, args: AppArgs, fleet: Any = None, encoder: Any = None) -> None:
        self.llm = llm
        self.fleet = fleet
        self.encoder = encoder  # the encoder service, when the app runs one (GET /v1/encoder)
        self.alert_feed = None  # one reader of the alert stream for every GET /v1/alerts (deployments.alert_feed)
        self.args = args
        self.store = RedisTokenStore(args.redis)
        from actors.metrics import QueryMetrics

        self.metrics = QueryMetrics()
        from deployments import guard  # the module itself (this class's code is shipped to the replica by value)

        guard.configure(args)

    @api.get("/healthz")
    def health(self) -> dict:
        try:
            self.store.streams()  # the cache answers
        except Exception as exc:
            raise HTTPException(503, f"token cache unavailable ({type(exc).__name__})") from None
        return {"status": "ok"}

    @api.get("/v1/fleet")
    async def fleet_status(self) -> dict:
        if self.fleet is None:
            raise HTTPException(404, "this app runs no camera fleet (its cameras are supervised elsewhere)")
        return await self.fleet.status.remote()

    @api.get("/v1/cameras")
    def cameras(self) -> dict:
        try:
            return self._cameras()
        except Exception as exc:
            raise HTTPException(503, f"token cache unavailable ({type(exc).__name__}); retry",
                                headers={"Retry-After": "1"}) from None

    def _cameras(self) -> dict:
        out = {}
        for cam in self.store.streams():
            stats = self.store.get_stats(cam) or {}
            tokens_in, kept = stats.get("tokens_in") or 0, stats.get("tokens_kept") or 0
            out[cam] = {
                "frames_cached": self.store.frame_count(cam),
                "last_frame": self.store.last_frame_index(cam),
                "frames_consumed": stats.get("consumed"), "frames_processed": stats.get("processed"),
                "lag": stats.get("lag"), "keep_ratio": kept / tokens_in if tokens_in else None,
                "cache_bytes": self.store.nbytes(cam), "status": stats.get("status"),
                "faults": stats.get("faults") or {}, "last_fault": stats.get("last_fault"),
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

    def _model_id(self) -> str:
        return self.args.model.weights or "streamdycoke-tiny-random"

    @api.get("/v1/alerts")
    async def alerts(self, request: Request, camera: list[str] = Query(default=[], max_length=100),
                     since: str = Query("$", pattern=r"^(\$|0|\d{1,20}-\d{1,20})$")):
        """Standing queries' alerts as server-sent events (``event: alert``, ``id:`` the alert stream's id,
        ``data:`` the alert, schema ``streamdycoke.alert`` v1), for the ``camera``s given (repeatable; none:
        all). ``since``: ``$`` only new alerts (the default), ``0`` every alert kept, or an id to resume
        after; a reconnecting client's ``Last-Event-ID`` header resumes where it stopped."""
        import json
        import re

        for c in camera:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", c):
                raise HTTPException(422, f"bad camera name {c[:50]!r}")
        last = request.headers.get("last-event-id") or since
        if not re.fullmatch(r"0|\$|\d{1,20}-\d{1,20}", last):
            raise HTTPException(422, "Last-Event-ID must be an alert id")
        cams = set(camera) or None
        if self.alert_feed is None:
            from .alert_feed import AlertFeed

            self.alert_feed = AlertFeed(self.store)
        try:
            history, sub = await self.alert_feed.subscribe(last)
        except Exception as exc:
            raise HTTPException(503, f"token cache unavailable ({type(exc).__name__}); retry",
                                headers={"Retry-After": "1"}) from None

        def event(eid: str, record: dict) -> str | None:
            if cams is None or record.get("camera") in cams:
                return f"id: {eid}\nevent: alert\ndata: {json.dumps(record)}\n\n"
            return None

        async def events():
            try:
                yield ": streamdycoke alerts\n\n"  # the stream is open
                for eid, record in history:
                    if (e := event(eid, record)) is not None:
                        yield e
                said_error = None
                while not await request.is_disconnected():
                    try:
                        eid, record = await asyncio.wait_for(sub.queue.get(), timeout=15.0)
                    except asyncio.TimeoutError:  # a comment keeps proxies from closing an idle stream
                        yield ": keep-alive\n\n"
                        err = self.alert_feed.error
                        if err and err != said_error:  # said on the stream; the feed retries
                            yield f"event: error\ndata: {json.dumps({'error': err})}\n\n"
                        said_error = err
                        if sub.overflowed and sub.queue.empty():
                            yield f"event: error\ndata: {json.dumps({'error': 'this listener fell behind; reconnect with Last-Event-ID'})}\n\n"
                            return
                        continue
                    if (e := event(eid, record)) is not None:
                        yield e
            finally:
                self.alert_feed.unsubscribe(sub)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @api.get("/v1/models")
    def models(self) -> dict:
        return model_list(self._model_id())

    @api.post("/v1/chat/completions")
    async def chat_completions(self, req: ChatRequest):
        """OpenAI's chat completion over one camera's recent window (see :mod:`deployments.openai_api`).
        Errors come in OpenAI's shape (``{"error": {"message", "type", "code"}}``), so clients show the reason."""
        try:
            return await self._chat(req)
        except HTTPException as exc:
            return openai_error(exc.status_code, str(exc.detail), exc.headers)

    async def _chat(self, req: ChatRequest):
        if req.model != self._model_id():
            self.metrics.query("http_404")
            raise HTTPException(404, f"model {req.model!r} is not served here; GET /v1/models lists {self._model_id()!r}")
        try:
            cam, question, budget, options = parse_request(req)
            q = QueryRequest(camera=cam.camera, question=question, window_s=cam.window_s, max_new_tokens=budget,
                             **options)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError too
            self.metrics.query("http_400")
            raise HTTPException(400, str(exc).splitlines()[0][:500]) from None
        words = len(question.split())
        if req.stream:
            return await self._chat_stream(q, words, bool((req.stream_options or {}).get("include_usage")))
        out = await self.query(q)
        return chat_completion(self._model_id(), out, budget, words)

    async def _chat_stream(self, q: QueryRequest, words: int, include_usage: bool):
        """The answer's tokens as they are generated. What fails before the first token (the window, the
        LLM refusing the camera's tokens) is an HTTP error like the non-streamed answer's."""
        try:
            req, segs, t0, t_fetch = self._request(q)
            items = self.llm.options(stream=True).generate_stream.remote(req)
            first = await asyncio.wait_for(items.__anext__(), timeout=self.args.query_timeout_s)
        except HTTPException as exc:
            self.metrics.query(f"http_{exc.status_code}")
            raise
        except Exception as exc:
            status, message = self._llm_error(q, exc)
            self.metrics.query(f"http_{status}")
            raise HTTPException(status, message, headers=None if status == 409 else {"Retry-After": "1"}) from None

        async def rest():
            yield first
            async for item in items:
                yield item

        def to_out(res: dict) -> dict:
            out = self._answer(q, res, segs, t0, t_fetch)
            self.metrics.query("ok", out["latency_ms"])
            return out

        return StreamingResponse(chat_chunks(self._model_id(), rest(), words, include_usage, to_out),
                                 media_type="text/event-stream")

    def _request(self, q: QueryRequest) -> tuple[LLMRequest, list, float, float]:
        """The LLM request for ``q``: the camera's window read from the token cache (timed)."""
        t0 = time.perf_counter()
        if q.window_s > self.args.redis.retention_s:
            raise HTTPException(400, f"window_s {q.window_s} is over the cache's retention_s {self.args.redis.retention_s}")
        try:
            segs = self.store.read_recent(q.camera, q.window_s)
        except SegmentFormatError as exc:
            raise HTTPException(500, f"corrupt token cache entry for {q.camera!r}: {exc}") from None
        except Exception as exc:  # Redis unreachable: the caller may retry
            raise HTTPException(503, f"token cache unavailable ({type(exc).__name__}); retry",
                                headers={"Retry-After": "1"}) from None
        if not segs:
            raise HTTPException(404, f"unknown camera {q.camera!r}: no frames cached")
        req = LLMRequest(q.camera, q.question, q.max_new_tokens, [encode_segment(s) for s in segs],
                         options=GenerationOptions(q.temperature, q.top_p, q.seed))
        return req, segs, t0, time.perf_counter() - t0

    def _llm_error(self, q: QueryRequest, exc: BaseException) -> tuple[int, str]:
        """The HTTP status and message for a failed LLM call."""
        if isinstance(exc, ValueError):  # e.g. the camera's encoder does not match the LLM
            return 409, str(exc)
        if isinstance(exc, asyncio.TimeoutError):
            return 503, f"the LLM did not answer within {self.args.query_timeout_s:.0f} s; retry"
        # a replica died mid-query, Serve is rescheduling: the caller may retry
        log.warning("query for %s failed: %s", q.camera, type(exc).__name__)
        return 503, f"LLM replica unavailable ({type(exc).__name__}); retry"

    async def _query(self, q: QueryRequest) -> dict:
        req, segs, t0, t_fetch = self._request(q)
        try:
            res = await asyncio.wait_for(self.llm.generate.remote(req), timeout=self.args.query_timeout_s)
        except Exception as exc:
            status, message = self._llm_error(q, exc)
            raise HTTPException(status, message, headers=None if status == 409 else {"Retry-After": "1"}) from None
        return self._answer(q, res, segs, t0, t_fetch)

    def _answer(self, q: QueryRequest, res: dict, segs: list, t0: float, t_fetch: float) -> dict:
        return {
            "camera": q.camera, "question": q.question, "answer": res["answer"], "finish_reason": res["finish_reason"],
            "usage": {"visual_tokens": res["visual_tokens"],
                      "visual_tokens_uncompressed": res["visual_tokens_uncompressed"],
                      "frames": len(segs), "new_tokens": res["new_tokens"]},
            "latency_ms": {"cache_fetch": 1e3 * t_fetch, "queue": res["queue_ms"], "prefill": res["prefill_ms"],
                           "decode": res["decode_ms"], "total": 1e3 * (time.perf_counter() - t0)},
            "batch_size": res["batch_size"],
        }


def build_app(args: dict | AppArgs | None = None) -> Application:
    """The Serve application for ``serve run`` / ``serveConfigV2`` (``deployments.app:build_app``)."""
    a = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    opts: dict[str, Any] = {"ray_actor_options": {"num_cpus": a.num_cpus, "num_gpus": a.num_gpus}}
    if a.autoscaling_config:
        opts["autoscaling_config"] = a.autoscaling_config
    else:
        opts["num_replicas"] = a.num_replicas
    llm = LLMDeployment.options(**opts).bind(a)
    encoder = None
    if a.encoder is not None:
        from .encoder import EncoderDeployment

        e = a.encoder
        eopts: dict[str, Any] = {"ray_actor_options": {"num_cpus": e.num_cpus, "num_gpus": e.num_gpus}}
        if e.autoscaling_config:
            eopts["autoscaling_config"] = e.autoscaling_config
        else:
            eopts["num_replicas"] = e.num_replicas
        encoder = EncoderDeployment.options(**eopts).bind(a.model, e.max_batch_size, e.batch_wait_timeout_s)
    fleet = None
    if a.fleet is not None:
        fleet = CameraFleet.options(ray_actor_options={"num_cpus": a.fleet.num_cpus}).bind(a, encoder, llm)
    return Gateway.options(ray_actor_options={"num_cpus": a.gateway_num_cpus},
                           max_ongoing_requests=a.gateway_max_ongoing_requests).bind(llm, a, fleet, encoder)
