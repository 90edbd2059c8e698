"""The Ray side of the camera pipeline: one actor per camera, and a supervisor that owns them.

``CameraActor`` is a thin shell around :class:`actors.camera.CameraWorker`: it opens nothing in
``__init__``, runs the worker's loop in :meth:`CameraActor.run`, and publishes the worker's counters
as Ray metrics. Ray restarts a dead actor (``max_restarts=-1``); the supervisor notices that the
actor's ``run`` call failed and calls it again, and the fresh worker resumes from the committed
offset with its window rebuilt from the token cache.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

from streamdycoke import EncoderSpec

from .camera import CameraWorker
from .config import CameraConfig, KafkaSettings, RedisSettings, encoder_refusal
from .token_cache import RedisTokenStore

__all__ = ["CameraActor", "CameraRefused", "CameraSupervisor"]

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=2, num_cpus=0.25)
class CameraActor:
    def __init__(self, camera: CameraConfig, kafka: KafkaSettings, redis: RedisSettings,
                 app_model: EncoderSpec | None = None) -> None:
        self.camera = camera
        self.worker = CameraWorker(camera, kafka, RedisTokenStore(redis), app_model)
        self._stop = threading.Event()

    def run(self) -> dict:
        """Consume until :meth:`stop`, recovering from faults by itself (:meth:`CameraWorker.run`);
        metrics and the camera's stats are published every half second. Returns the final stats."""
        from .metrics import CameraMetrics

        metrics = CameraMetrics(self.camera.id)
        self.worker.run(self._stop, every=lambda: self._publish(metrics))
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
        c = self.worker.counters
        lag = cache_bytes = None
        try:
            lag = self.worker.lag(fresh=False) if self.worker.started else None
        except Exception:
            pass
        try:
            cache_bytes = self.worker.store.nbytes(self.camera.id)
        except Exception:
            pass
        return {"camera": self.camera.id, "consumed": c.consumed, "processed": c.processed, "skipped": c.skipped,
                "dead_lettered": c.dead_lettered, "replayed": c.replayed, "tokens_in": c.tokens_in,
                "tokens_kept": c.tokens_kept, "lag": lag, "cache_bytes": cache_bytes,
                "frame_to_cache_p50_ms": c.percentile_ms(0.5), "frame_to_cache_p99_ms": c.percentile_ms(0.99),
                "stages_ms": c.times.summary_ms(),
                **self.worker.health()}

    def reset_latencies(self) -> None:
        """Forget the latency samples kept for percentiles (a benchmark measures the steady state after a warm-up)."""
        self.worker.counters.times.clear()

    def stop(self) -> None:
        self._stop.set()


class CameraRefused(ValueError):
    """A camera whose tokens the application's LLM could not read (see :func:`actors.config.encoder_refusal`)."""


class CameraSupervisor:
    """Owns one :class:`CameraActor` per configured camera; cameras can be added and removed at run time.

    Args:
        kafka: the broker and topics.
        redis: the token cache.
        app_model: the application's LLM; a camera that names no encoder uses its vision tower, and a
            camera whose encoder cannot feed it is refused (:class:`CameraRefused`) instead of started.
        actor_options: Ray options for every camera actor (e.g. ``{"resources": {"camera": 1}}`` to
            place them on the CPU worker group of a cluster).
    """

    def __init__(self, kafka: KafkaSettings, redis: RedisSettings, app_model: EncoderSpec | None = None,
                 actor_options: dict | None = None) -> None:
        self.kafka, self.redis = kafka, redis
        self.app_model = app_model or EncoderSpec()
        self.actor_options = dict(actor_options or {})
        self.configs: dict[str, CameraConfig] = {}
        self.actors: dict[str, Any] = {}
        self._runs: dict[str, Any] = {}
        self.restarts: dict[str, int] = {}
        self.refused: dict[str, str] = {}  # camera -> why its tokens could not feed the LLM

    def add(self, camera: CameraConfig) -> None:
        if camera.id in self.actors:
            raise ValueError(f"camera {camera.id} is already running")
        reason = encoder_refusal(camera, self.app_model)
        if reason is not None:
            raise CameraRefused(reason)
        actor = CameraActor.options(name=f"camera-{camera.id}", **self.actor_options).remote(
            camera, self.kafka, self.redis, self.app_model)
        self.actors[camera.id] = actor
        self.configs[camera.id] = camera
        self._runs[camera.id] = actor.run.remote()
        self.restarts[camera.id] = 0

    def remove(self, camera_id: str, timeout_s: float = 30.0) -> dict | None:
        actor = self.actors.pop(camera_id)
        run = self._runs.pop(camera_id)
        self.configs.pop(camera_id, None)
        actor.stop.remote()
        try:
            return ray.get(run, timeout=timeout_s)
        finally:
            ray.kill(actor, no_restart=True)

    def reconcile(self, cameras: list[CameraConfig]) -> dict[str, list[str]]:
        """Bring the running actors to ``cameras``: add new ones, remove missing ones, restart changed
        ones (each resumes from its committed offset). A camera that fails to start is reported and
        tried again at the next call; the others go on. Returns what changed."""
        want = {c.id: c for c in cameras}
        out: dict[str, list[str]] = {"added": [], "removed": [], "failed": [], "refused": []}
        self.refused = {cam: why for cam, why in self.refused.items() if cam in want}
        for cam in [c for c in self.actors if c not in want or want[c] != self.configs.get(c)]:
            try:
                self.remove(cam)
            except Exception as exc:  # its run ended badly: it is stopped all the same
                log.warning("camera %s: stopped with %s", cam, type(exc).__name__)
            out["removed"].append(cam)
        for cam, cfg in want.items():
            if cam in self.actors:
                continue
            try:
                self.add(cfg)
                out["added"].append(cam)
                self.refused.pop(cam, None)
            except CameraRefused as exc:  # a configuration error: reported until the camera is changed
                if self.refused.get(cam) != str(exc):
                    log.error("%s; not started", exc)
                self.refused[cam] = str(exc)
                out["refused"].append(cam)
            except Exception as exc:
                log.error("camera %s: could not start (%s); retrying at the next reconcile", cam, exc)
                out["failed"].append(cam)
        return out

    def supervise(self) -> None:
        """Restart the run loop of any actor whose run call ended (e.g. the actor process died)."""
        for cam, run in list(self._runs.items()):
            ready, _ = ray.wait([run], timeout=0)
            if not ready:
                continue
            try:
                ray.get(run)
            except Exception as exc:  # the actor died mid-run; Ray has restarted it
                log.warning("camera %s: actor failed (%s); resuming", cam, type(exc).__name__)
            self.restarts[cam] += 1
            self._runs[cam] = self.actors[cam].run.remote()

    def wait_ready(self, timeout_s: float = 180.0) -> bool:
        """Wait until every actor has its encoder loaded and its consumer assigned; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = self.stats()
            if all(s.get("lag") is not None for s in stats.values()):
                return True
            time.sleep(0.5)
        return False

    def stats(self) -> dict[str, dict]:
        out = {}
        for cam, actor in self.actors.items():
            try:
                out[cam] = ray.get(actor.stats.remote(), timeout=10)
            except Exception as exc:
                out[cam] = {"camera": cam, "error": type(exc).__name__}
        return out

    def shutdown(self) -> None:
        for actor in self.actors.values():  # all stop at once; then each is waited for
            actor.stop.remote()
        for cam in list(self.actors):
            self.remove(cam)
