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
from .camera_stats import CameraStats, StandingStats
from .config import CameraConfig, KafkaSettings, RedisSettings, encoder_refusal
from .token_cache import RedisTokenStore

__all__ = ["CAMERA_RESOURCE", "CAMERA_SLOTS_PER_CPU", "CameraActor", "CameraRefused", "CameraSupervisor"]

log = logging.getLogger(__name__)


# Camera actors are placed by a custom resource, a camera slot (``camera``), not by fractions of a CPU:
# a node declares how many cameras it can carry (measured: ``streamdycoke bench pipeline --cameras
# 1,2,4,8,16``, see the README) and each actor takes one slot. An actor asks for no CPU of its own
# (``num_cpus=0``), so fractional CPU bookkeeping next to Serve's replicas never leaves one unschedulable
# on a node that has slots.
CAMERA_RESOURCE = "camera"
CAMERA_SLOTS_PER_CPU = 8


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


class CameraRefused(ValueError):
    """A camera whose tokens the application's LLM could not read (see :func:`actors.config.encoder_refusal`)."""


class CameraSupervisor:
    """Owns one :class:`CameraActor` per configured camera; cameras can be added and removed at run time.

    Args:
        kafka: the broker and topics.
        redis: the token cache.
        app_model: the application's LLM; a camera that names no encoder uses its vision tower, and a
            camera whose encoder cannot feed it is refused (:class:`CameraRefused`) instead of started.
        actor_options: Ray options for every camera actor, over the default of one camera slot and no CPU.
        encoder_handle: the app's encoder service (a Serve handle of :mod:`deployments.encoder`), or None:
            each actor encodes its own frames.
        llm_handle: the app's LLM deployment (a Serve handle), for cameras whose standing queries the LLM
            answers; a camera that has such queries is refused without one.
        reuse_prefill: standing queries ask the LLM to keep each window's KV cache (incremental prefill).
        placement_grace_s: an actor not running this long after it was added is reported as unplaced
            (:attr:`unplaced`, with why), until it runs; one that asks for more slots than the whole cluster
            has is reported at once. (Ray tells no placement apart from a slow start without its dashboard,
            so the grace covers the start of a worker process on a loaded node.)
    """

    def __init__(self, kafka: KafkaSettings, redis: RedisSettings, app_model: EncoderSpec | None = None,
                 actor_options: dict | None = None, placement_grace_s: float = 60.0, encoder_handle: Any = None,
                 llm_handle: Any = None, reuse_prefill: bool = True) -> None:
        self.kafka, self.redis = kafka, redis
        self.app_model = app_model or EncoderSpec()
        self.actor_options = dict(actor_options or {})
        self.configs: dict[str, CameraConfig] = {}
        self.actors: dict[str, Any] = {}
        self._runs: dict[str, Any] = {}
        self.restarts: dict[str, int] = {}
        self.refused: dict[str, str] = {}  # camera -> why its tokens could not feed the LLM
        self.unplaced: dict[str, str] = {}  # camera -> why its actor is not running yet (no free slot, ...)
        self.placement_grace_s = placement_grace_s
        self.encoder_handle = encoder_handle
        self.llm_handle, self.reuse_prefill = llm_handle, reuse_prefill  # for cameras' standing queries
        self._store = None  # the token cache the placement is published to (publish), opened on first use
        self._publish_error: str | None = None
        self._ready: dict[str, Any] = {}  # camera -> the actor's ready ref, until it is placed
        self._added_at: dict[str, float] = {}
        self.camera_nodes: dict[str, str] = {}  # camera -> the Ray node its actor runs on (known once placed)
        self._where: dict[str, Any] = {}  # camera -> the ref of its actor's where(), until it answers
        self.nodes: dict[str, dict] = {}  # node id -> {"alive", "role", "resources"} (watch_nodes)
        self.nodes_lost = 0  # nodes seen alive, then dead
        self._alive: set[str] = set()
        self._replicas: tuple[float, Any] = (0.0, None)  # (when read, the Serve replicas' nodes)

    def add(self, camera: CameraConfig) -> None:
        if camera.id in self.actors:
            raise ValueError(f"camera {camera.id} is already running")
        reason = encoder_refusal(camera, self.app_model)
        if reason is None and self.llm_handle is None and any(q.answerer == "llm" for q in camera.standing):
            reason = f"camera {camera.id}: its standing queries need the LLM deployment, and none was given"
        if reason is None and camera.encoding.at == "service" and self.encoder_handle is None:
            reason = f"camera {camera.id}: encoding.at is 'service', and the app runs no encoder service (AppArgs.encoder)"
        if reason is not None:
            raise CameraRefused(reason)
        # spread over the nodes that have slots: a lost node takes as few cameras as the cluster allows
        options = {"scheduling_strategy": "SPREAD", **self.actor_options}
        actor = CameraActor.options(name=f"camera-{camera.id}", **options).remote(
            camera, self.kafka, self.redis, self.app_model, self.encoder_handle, self.llm_handle, self.reuse_prefill)
        self.actors[camera.id] = actor
        self.configs[camera.id] = camera
        self._runs[camera.id] = actor.run.remote()
        self._ready[camera.id] = actor.__ray_ready__.remote()
        self._where[camera.id] = actor.where.remote()
        self._added_at[camera.id] = time.monotonic()
        self.restarts[camera.id] = 0

    def remove(self, camera_id: str, timeout_s: float = 30.0) -> dict | None:
        actor = self.actors.pop(camera_id)
        run = self._runs.pop(camera_id)
        self.configs.pop(camera_id, None)
        self.unplaced.pop(camera_id, None)
        self._added_at.pop(camera_id, None)
        self._where.pop(camera_id, None)
        self.camera_nodes.pop(camera_id, None)
        if self._ready.pop(camera_id, None) is not None:  # never placed: nothing to wait for
            ray.kill(actor, no_restart=True)
            return None
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

    def check_placement(self) -> dict[str, str]:
        """Update and return :attr:`unplaced`: cameras whose actor is still not running ``placement_grace_s``
        after it was added, with why (the cluster's free camera slots, or the resources the actor asks for)."""
        pending = [cam for cam in self._ready if not ray.wait([self._ready[cam]], timeout=0)[0]]
        for cam in [c for c in self._ready if c not in pending]:
            del self._ready[cam]
            if self.unplaced.pop(cam, None) is not None:
                log.info("camera %s: placed", cam)
        if not pending:
            return {}
        total = ray.cluster_resources()
        asks = {CAMERA_RESOURCE: 1, **self.actor_options.get("resources", {})}
        if self.actor_options.get("num_cpus"):
            asks["CPU"] = self.actor_options["num_cpus"]
        infeasible = any(total.get(r, 0) < n for r, n in asks.items())
        late = [c for c in pending if infeasible or time.monotonic() - self._added_at[c] > self.placement_grace_s]
        if late:
            free = ray.available_resources().get(CAMERA_RESOURCE, 0)
            for cam in late:
                why = ((f"more than the cluster has: it asks for {asks}" if infeasible else
                        f"not running {self.placement_grace_s:.0f} s after it was added: it asks for {asks}")
                       + f"; the cluster has {total.get(CAMERA_RESOURCE, 0):g} camera slots, {free:g} free (declare more "
                       "with ray start "
                       f"--resources '{{\"{CAMERA_RESOURCE}\": N}}', or let the autoscaler add a node)")
                if self.unplaced.get(cam) != why:
                    log.error("camera %s: %s", cam, why)
                self.unplaced[cam] = why
        return dict(self.unplaced)

    def watch_nodes(self) -> dict[str, dict]:
        """Update and return :attr:`nodes` from Ray's node table; a node seen alive and now dead is counted
        in :attr:`nodes_lost` and logged with the cameras it carried (Ray restarts them where slots are free)."""
        nodes = {}
        for n in ray.nodes():
            res = n.get("Resources") or {}
            nodes[n["NodeID"]] = {"alive": bool(n.get("Alive")), "role": (n.get("Labels") or {}).get("role"),
                                  "resources": {k: v for k, v in res.items() if k in ("CPU", "GPU", CAMERA_RESOURCE,
                                                                                      "accelerator")}}
        for node in [nid for nid in self._alive if not nodes.get(nid, {}).get("alive")]:
            self._alive.discard(node)
            self.nodes_lost += 1
            on_it = sorted(cam for cam, nid in self.camera_nodes.items() if nid == node)
            log.warning("Ray node %s lost; its cameras %s restart where camera slots are free", node, on_it)
        self._alive |= {nid for nid, n in nodes.items() if n["alive"]}
        self.nodes = nodes
        return nodes

    def _collect_where(self) -> None:
        for cam, ref in list(self._where.items()):
            if not ray.wait([ref], timeout=0)[0]:
                continue
            del self._where[cam]
            try:
                self.camera_nodes[cam] = ray.get(ref)
            except Exception:  # the actor died before it answered; asked again when its run restarts
                self.camera_nodes.pop(cam, None)

    def replicas(self, every_s: float = 5.0) -> list[dict] | None:
        """The Serve replicas and the node each runs on (Ray's state API, read at most every ``every_s``);
        None where the API is not there (a cluster without Ray's dashboard)."""
        when, cached = self._replicas
        if time.monotonic() - when < every_s:
            return cached
        out = None
        try:
            from ray.util.state import list_actors

            out = sorted(({"app": a.name.split("::", 1)[-1].split("#")[0], "deployment": a.name.split("#")[1],
                           "node": a.node_id}
                          for a in list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")],
                                              timeout=2, raise_on_missing_output=False)
                          if a.name and a.name.startswith("SERVE_REPLICA::") and a.name.count("#") >= 2),
                         key=lambda r: (r["app"], r["deployment"], r["node"]))
        except Exception as exc:
            log.debug("replica placement not read (%s)", exc)
        self._replicas = (time.monotonic(), out)
        return out

    def placement(self) -> dict:
        """The cameras running (with their restarts and node), refused and not placed (with why), the
        cluster's nodes (alive or not, role, resources, cameras on each), nodes lost, and where Serve's
        replicas run (None without Ray's state API)."""
        nodes = {nid: {**n, "cameras": sorted(c for c, m in self.camera_nodes.items() if m == nid)}
                 for nid, n in sorted(self.nodes.items())}
        return {"cameras": {cam: {"restarts": self.restarts.get(cam, 0), "node": self.camera_nodes.get(cam)}
                            for cam in sorted(self.actors)},
                "refused": dict(sorted(self.refused.items())), "unplaced": dict(sorted(self.unplaced.items())),
                "nodes": nodes, "nodes_lost": self.nodes_lost, "replicas": self.replicas()}

    def publish(self) -> None:
        """Write :meth:`placement` to the token cache, where the gateway's ``GET /v1/fleet`` and the console's
        wall read it (an app without a fleet deployment: ``run``, the demo). A cache that is down is skipped:
        the next call writes it."""
        try:
            if self._store is None:
                from .token_cache import RedisTokenStore

                self._store = RedisTokenStore(self.redis)
            self._store.set_fleet_status(self.placement())
            self._publish_error = None
        except Exception as exc:  # said once per kind of failure, not every round
            if self._publish_error != type(exc).__name__:
                log.warning("camera fleet status not published to the cache (%s: %s); retried every round",
                            type(exc).__name__, exc)
            self._publish_error = type(exc).__name__

    def supervise(self) -> None:
        """Restart the run loop of any actor whose run call ended (e.g. the actor process died), report the
        ones not placed (:meth:`check_placement`), follow the nodes (:meth:`watch_nodes`) and publish the
        placement (:meth:`publish`)."""
        self.check_placement()
        try:
            self.watch_nodes()
        except Exception as exc:  # the GCS is briefly unreachable: the next round reads it
            log.debug("node table not read (%s)", exc)
        self._collect_where()
        self.publish()
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
            self._where[cam] = self.actors[cam].where.remote()  # it may run on another node now

    def wait_ready(self, timeout_s: float = 180.0) -> bool:
        """Wait until every actor has its encoder loaded and its consumer assigned; False on timeout, or as
        soon as an actor cannot be placed (:attr:`unplaced` says which and why)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.check_placement():
                return False
            placed = [cam for cam in self.actors if cam not in self._ready]
            stats = self.stats(placed)
            if len(placed) == len(self.actors) and all(s.get("lag") is not None for s in stats.values()):
                return True
            time.sleep(0.5)
        return False

    def stats(self, cameras: list[str] | None = None) -> dict[str, dict]:
        """Each camera's stats (an unplaced camera's say so, without asking its actor)."""
        out = {}
        for cam in (self.actors if cameras is None else cameras):
            actor = self.actors[cam]
            if cam in self.unplaced:
                out[cam] = CameraStats(camera=cam, error="unplaced", detail=self.unplaced[cam]).model_dump()
                continue
            try:
                out[cam] = ray.get(actor.stats.remote(), timeout=10)
            except Exception as exc:
                out[cam] = CameraStats(camera=cam, error=type(exc).__name__).model_dump()
        return out

    def shutdown(self) -> None:
        for actor in self.actors.values():  # all stop at once; then each is waited for
            actor.stop.remote()
        for cam in list(self.actors):
            self.remove(cam)
