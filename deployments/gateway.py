"""``Gateway``: the HTTP ingress of the Serve app (FastAPI).

``POST /v1/query``, ``GET /v1/cameras``, ``GET /healthz``, ``GET /v1/fleet``, the operator's console at
``/ui/`` with the camera views it reads (:mod:`deployments.console`),
``GET /v1/alerts`` (standing queries' alerts as server-sent events, :mod:`actors.alerts`, read once
per replica by :mod:`deployments.alert_feed`), and the OpenAI-compatible ``POST /v1/chat/completions``
and ``GET /v1/models`` (:mod:`deployments.openai_api`). It validates the request, reads the camera's
window from the Redis token cache (timed) and hands the segments to the LLM deployment.
(No ``from __future__ import annotations`` here: FastAPI must see the request model as a class.)

Size: over 300 lines by its docstrings; the routes are thin (the console, the OpenAI surface and the alert
feed are modules of their own); its code is under 300.
"""

import asyncio
import logging
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from sse_starlette import EventSourceResponse

from actors.camera_stats import CameraStats
from actors.llm_request import GenerationOptions, LLMRequest
from actors.names import CAMERA_ID_MAX, ID_PATTERN
from actors.token_cache import RedisTokenStore
from streamdycoke.segment import SegmentFormatError

from . import console
from .config import AppArgs
from .guard import RequestGuard
from .openai_api import ChatRequest, chat_chunks, chat_completion, model_list, openai_error, parse_request

__all__ = ["Gateway", "QueryRequest"]

log = logging.getLogger(__name__)


class QueryRequest(BaseModel):
    model_config = {"extra": "forbid"}

    camera: str = Field(min_length=1, max_length=CAMERA_ID_MAX, pattern=ID_PATTERN)
    question: str = Field(min_length=1, max_length=4000)
    window_s: float = Field(10.0, gt=0, allow_inf_nan=False, description="seconds behind the camera's newest frame "
                                                                          "(at most the cache's retention_s)")
    max_new_tokens: int = Field(32, ge=1, le=1024)
    temperature: float = Field(0.0, ge=0, le=2, allow_inf_nan=False, description="0: greedy; above: sampled")
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, lt=2**63, description="a sampled answer, repeatable")


api = FastAPI(title="StreamDyCoke")
api.add_middleware(RequestGuard)  # token and size limits: deployments.guard, configured by the Gateway
api.include_router(console.router)  # the console and its camera views: deployments.console


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
        self.encoder = encoder  # the encoder service, when the app runs one (bound so it is deployed with the app)
        self.alert_feed = None  # one reader of the alert stream for every GET /v1/alerts (deployments.alert_feed)
        self.args = args
        self.store = RedisTokenStore(args.redis)
        from actors.metrics import QueryMetrics

        self.metrics = QueryMetrics()
        from deployments import guard  # the module itself (this class's code is shipped to the replica by value)

        guard.configure(args)
        console.configure(self.store)

    @api.get("/healthz")
    def health(self) -> dict:
        try:
            self.store.streams()  # the cache answers
        except Exception as exc:
            raise HTTPException(503, f"token cache unavailable ({type(exc).__name__})") from None
        return {"status": "ok"}

    @api.get("/v1/fleet")
    async def fleet_status(self) -> dict:
        """The camera fleet's status: the fleet deployment's, else what the supervisor running the cameras
        elsewhere (``run``, the demo) last published to the cache (cameras, refused, unplaced)."""
        if self.fleet is not None:
            return await self.fleet.status.remote()
        try:
            published = self.store.fleet_status()
        except Exception as exc:
            raise HTTPException(503, f"token cache unavailable ({type(exc).__name__}); retry",
                                headers={"Retry-After": "1"}) from None
        if published is None:
            raise HTTPException(404, "no camera fleet here, and no supervisor has published one")
        return published

    @api.get("/v1/cameras")
    def cameras(self, offset: int = Query(0, ge=0), limit: int = Query(1000, ge=1, le=1000)) -> dict:
        """The cameras the cache holds frames for, by name, ``limit`` from ``offset`` (``total``: all of them)."""
        try:
            return self._cameras(offset, limit)
        except Exception as exc:
            raise HTTPException(503, f"token cache unavailable ({type(exc).__name__}); retry",
                                headers={"Retry-After": "1"}) from None

    def _cameras(self, offset: int = 0, limit: int = 1000) -> dict:
        out = {}
        names = self.store.streams()
        for cam in names[offset:offset + limit]:
            raw = self.store.get_stats(cam)
            stats = CameraStats.model_validate(raw) if raw else None  # None: no actor has reported yet
            out[cam] = {
                "frames_cached": self.store.frame_count(cam),
                "last_frame": self.store.last_frame_index(cam),
                "frames_consumed": stats and stats.consumed, "frames_processed": stats and stats.processed,
                "lag": stats and stats.lag, "keep_ratio": stats and stats.keep_ratio,
                "cache_bytes": self.store.nbytes(cam), "status": stats and stats.status,
                "faults": stats.faults if stats else {}, "last_fault": stats and stats.last_fault,
                "frame_to_cache_p99_ms": stats and stats.frame_to_cache_p99_ms,
            }
        return {"cameras": out, "total": len(names), "offset": offset}

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
            if len(c) > CAMERA_ID_MAX or not re.fullmatch(ID_PATTERN, c):
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

        def event(eid: str, record: dict) -> dict | None:
            if cams is None or record.get("camera") in cams:
                return {"id": eid, "event": "alert", "data": json.dumps(record)}
            return None

        async def events():
            try:
                yield {"comment": "streamdycoke alerts"}  # the stream is open
                for eid, record in history:
                    if (e := event(eid, record)) is not None:
                        yield e
                said_error = None
                while True:  # ended (cancelled) by the response when the client goes
                    try:
                        eid, record = await asyncio.wait_for(sub.queue.get(), timeout=5.0)
                    except asyncio.TimeoutError:  # no alert for a while: say the feed's trouble, if any
                        err = self.alert_feed.error
                        if err and err != said_error:  # said on the stream; the feed retries
                            yield {"event": "error", "data": json.dumps({"error": err})}
                        said_error = err
                        if sub.overflowed and sub.queue.empty():
                            yield {"event": "error", "data": json.dumps(
                                {"error": "this listener fell behind; reconnect with Last-Event-ID"})}
                            return
                        continue
                    if (e := event(eid, record)) is not None:
                        yield e
            finally:
                self.alert_feed.unsubscribe(sub)

        # sse-starlette frames the events, sends a comment every 15 s on an idle stream (so proxies keep it
        # open) and cancels the generator when the client disconnects
        return EventSourceResponse(events(), ping=15, sep="\n", headers={"Cache-Control": "no-cache"})

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
        if req.stream:
            return await self._chat_stream(q, bool((req.stream_options or {}).get("include_usage")))
        out = await self.query(q)
        return chat_completion(self._model_id(), out, budget)

    async def _chat_stream(self, q: QueryRequest, include_usage: bool):
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
            raise HTTPException(status, message, headers={"Retry-After": "1"} if status == 503 else None) from None

        async def rest():
            yield first
            async for item in items:
                yield item

        def to_out(res: dict) -> dict:
            out = self._answer(q, res, segs, t0, t_fetch)
            self.metrics.query("ok", out["latency_ms"])
            return out

        return EventSourceResponse(chat_chunks(self._model_id(), rest(), include_usage, to_out), ping=15, sep="\n")

    def _request(self, q: QueryRequest) -> tuple[LLMRequest, list, float, float]:
        """The LLM request for ``q``: the camera's window read from the token cache (timed)."""
        t0 = time.perf_counter()
        if q.window_s > self.args.redis.retention_s:
            raise HTTPException(400, f"window_s {q.window_s} is over the cache's retention_s {self.args.redis.retention_s}")
        try:  # forwarded as stored: the LLM replica decodes them, once, with every check
            segs = self.store.reader_window_raw(q.camera, window_s=q.window_s)
        except SegmentFormatError as exc:
            raise HTTPException(500, f"corrupt token cache entry for {q.camera!r}: {exc}") from None
        except Exception as exc:  # Redis unreachable: the caller may retry
            raise HTTPException(503, f"token cache unavailable ({type(exc).__name__}); retry",
                                headers={"Retry-After": "1"}) from None
        if not segs:
            raise HTTPException(404, f"unknown camera {q.camera!r}: no frames cached")
        req = LLMRequest(q.camera, q.question, q.max_new_tokens, segs,
                         options=GenerationOptions(q.temperature, q.top_p, q.seed))
        return req, segs, t0, time.perf_counter() - t0

    def _llm_error(self, q: QueryRequest, exc: BaseException) -> tuple[int, str]:
        """The HTTP status and message for a failed LLM call."""
        if isinstance(exc, SegmentFormatError):  # the replica decodes the window: a corrupt cache entry
            cause = getattr(exc, "cause", None) or exc  # Ray's wrapper carries the replica's exception
            return 500, f"corrupt token cache entry for {q.camera!r}: {cause}"
        if isinstance(exc, ValueError):  # e.g. the camera's encoder does not match the LLM
            cause = getattr(exc, "cause", None) or exc  # the replica's own message, not Ray's traceback
            return 409, f"camera {q.camera!r}: {cause}"
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
            raise HTTPException(status, message, headers={"Retry-After": "1"} if status == 503 else None) from None
        return self._answer(q, res, segs, t0, t_fetch)

    def _answer(self, q: QueryRequest, res: dict, segs: list, t0: float, t_fetch: float) -> dict:
        return {
            "camera": q.camera, "question": q.question, "answer": res["answer"], "finish_reason": res["finish_reason"],
            "usage": {"visual_tokens": res["visual_tokens"],
                      "visual_tokens_uncompressed": res["visual_tokens_uncompressed"],
                      "frames": len(segs), "new_tokens": res["new_tokens"], "prompt_tokens": res["prompt_tokens"]},
            "latency_ms": {"cache_fetch": 1e3 * t_fetch, "queue": res["queue_ms"], "prefill": res["prefill_ms"],
                           "decode": res["decode_ms"], "total": 1e3 * (time.perf_counter() - t0)},
            "batch_size": res["batch_size"],
        }
