"""The Ray side of a camera: one actor per camera (the supervisor that owns them: :mod:`actors.supervisor`).

``CameraActor`` is a thin shell around :class:`actors.camera.CameraWorker`: it opens nothing in
``__init__``, runs the worker's loop in :meth:`CameraActor.run`, and publishes the worker's counters
as Ray metrics. Ray restarts a dead actor (``max_restarts=-1``); the supervisor notices that the
actor's ``run`` call failed and calls it again, and the fresh worker resumes from the committed
offset with its window rebuilt from the token cache.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from streamdycoke import EncoderSpec

from .camera import CameraWorker
from .camera_stats import CameraStats, StandingStats
from .config import CameraConfig, KafkaSettings, RedisSettings
from .placement import CAMERA_RESOURCE
from .token_cache import RedisTokenStore

__all__ = ["CameraActor"]

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=2, num_cpus=0, resources={CAMERA_RESOURCE: 1})
class CameraActor:
    def __init__(self, camera: CameraConfig, kafka: KafkaSettings, redis: RedisSettings,
                 app_model: EncoderSpec | None = None, encoder_handle: Any = None, llm_handle: Any = None,
                 reuse_prefill: bool = True) -> None:
        import torch

        # many camera actors share a node's cores: one intra-op thread each, not one per core each (16 actors
        # on 2 cores with 2 threads apiece spent more time switching than encoding)
        torch.set_num_threads(1)
        self.camera = camera
        self.node = ray.get_runtime_context().get_node_id()  # where this (re)started actor runs
        encoder = None
        if encoder_handle is not None and camera.encoding.at != "actor":  # the app's encoder service: batched there
            from .encoder_client import RemoteEncoder

            encoder = RemoteEncoder(camera.pipeline_config(app_model).encoder, encoder_handle, camera=camera.id,
                                    differential=camera.encoding.differential)
        self.worker = CameraWorker(camera, kafka, RedisTokenStore(redis), app_model, encoder=encoder)
        self._stop = threading.Event()
        self.kafka, self.redis = kafka, redis
        self.llm_handle, self.reuse_prefill = llm_handle, reuse_prefill
        self.standing = None  # the camera's standing queries (actors.standing), built when run starts

    def _start_standing(self):
        """The camera's standing queries, on their own thread (the frame loop never waits for an answer)."""
        from .alerts import AlertSinks
        from .answerers import EventQAAnswerer, LLMAnswerer
        from .metrics import StandingMetrics
        from .standing import StandingQueries
        from .webhooks import webhook_routes

        cam = self.camera
        metrics = StandingMetrics(cam.id)
        store = RedisTokenStore(self.redis)  # its own connections: the frame loop's are not shared across threads
        answerers = {}
        if any(q.answerer == "llm" for q in cam.standing):
            if self.llm_handle is None:
                raise ValueError(f"camera {cam.id}: standing queries answered by the LLM need the app's LLM "
                                 "deployment, and this actor was started without one")
            answerers["llm"] = LLMAnswerer(self.llm_handle)
        if any(q.answerer == "event-qa" for q in cam.standing):
            answerers["event-qa"] = EventQAAnswerer()
        try:
            state = store.alerting(cam.id)
        except Exception:  # the cache is down: start clear; the worker's recovery reports the outage
            state = {}
        sinks = AlertSinks(self.kafka, store, metrics, webhooks=webhook_routes(cam))
        runner = StandingQueries(cam.id, cam.standing, store, answerers, sinks, metrics, reuse=self.reuse_prefill,
                                 state=state)
        self.worker.on_cut = runner.scene_cut
        thread = threading.Thread(target=self._standing_loop, args=(runner, sinks), name=f"standing-{cam.id}",
                                  daemon=True)
        thread.start()
        # kept alerts are retried every second though no new alert comes (a webhook only after its backoff)
        threading.Thread(target=sinks.retry_until, args=(self._stop,), name=f"alerts-{cam.id}", daemon=True).start()
        return runner, thread

    def _standing_loop(self, runner, sinks) -> None:
        try:
            runner.run(self._stop)
        finally:
            sinks.close()

    def run(self) -> dict:
        """Consume until :meth:`stop`, recovering from faults by itself (:meth:`CameraWorker.run`);
        metrics and the camera's stats are published every half second. Returns the final stats."""
        from .metrics import CameraMetrics

        metrics = CameraMetrics(self.camera.id)
        thread = None
        if self.camera.standing and self.standing is None:
            self.standing, thread = self._start_standing()
        try:
            self.worker.run(self._stop, every=lambda: self._publish(metrics))
        finally:
            if thread is not None:
                self.standing.stop()
                thread.join(timeout=30)
                self.standing = None
        return self.stats()

    def _publish(self, metrics) -> None:
        """Metrics always; the stats the API shows when the cache is reachable."""
        stats = self.stats()
        metrics.publish(self.worker.counters, stats["lag"], stats.get("cache_bytes"), self.worker.faults,
                        self.worker.started)
        try:
            self.worker.store.set_stats(self.camera.id, stats)
        except Exception:  # the cache is down: the worker's next batch records that fault
            log.debug("camera %s: stats not written", self.camera.id, exc_info=True)

    def stats(self) -> dict:
        """This camera's :class:`~actors.camera_stats.CameraStats`, as its JSON-ready dict."""
        c = self.worker.counters
        stages = c.times.summary_ms()
        f2c = stages.get("frame_to_cache", {})
        lag = cache_bytes = None
        try:
            lag = self.worker.lag(fresh=False) if self.worker.started else None
        except Exception:
            pass
        try:
            cache_bytes = self.worker.store.nbytes(self.camera.id)
        except Exception:
            pass
        return CameraStats(
            camera=self.camera.id, consumed=c.consumed, processed=c.processed, skipped=c.skipped,
            dead_lettered=c.dead_lettered, replayed=c.replayed, repaired=c.repaired, tokens_in=c.tokens_in,
            tokens_kept=c.tokens_kept, lag=lag, cache_bytes=cache_bytes, frame_to_cache_p50_ms=f2c.get("p50"),
            frame_to_cache_p99_ms=f2c.get("p99"), stages_ms=stages,
            standing=self._standing_stats() if self.standing is not None else None, node=self.node,
            **self.worker.health()).model_dump(exclude_none=False)

    def where(self) -> str:
        """The Ray node id this actor runs on."""
        return self.node

    def _standing_stats(self) -> StandingStats:
        r = self.standing
        return StandingStats(rounds=r.rounds, reused_tokens=r.reused_tokens,
                             alerting=sorted(q for q, on in r.active().items() if on))

    def set_standing(self, paused: bool | None = None, reuse: bool | None = None) -> None:
        """Pause or resume the standing queries, and ask the LLM to reuse each window's KV cache or not
        (a benchmark compares the two side by side); the latency samples start over."""
        r = self.standing
        if r is None:
            return
        if paused is not None:
            r.paused = paused
        if reuse is not None:
            r.reuse = reuse
        r.reset_stats()

    def standing_latencies(self) -> list[tuple[str, str, float]]:
        """``(query, trigger, seconds)`` of the last standing-query rounds (a benchmark pools them)."""
        return list(self.standing.latencies) if self.standing is not None else []

    def stage_samples(self) -> dict[str, list[float]]:
        """The latency samples kept for percentiles, seconds by stage (a benchmark pools them over cameras)."""
        return {stage: list(d) for stage, d in list(self.worker.counters.times.recent.items())}

    def pid(self) -> int:
        import os

        return os.getpid()

    def reset_latencies(self) -> None:
        """Forget the latency samples kept for percentiles (a benchmark measures the steady state after a warm-up)."""
        self.worker.counters.times.clear()

    def stop(self) -> None:
        self._stop.set()
