"""The camera supervisor: owns one :class:`~actors.ray_actor.CameraActor` per configured camera.

It adds, removes and restarts camera actors (each resumes from its committed offset), reports the ones the
cluster cannot place and why, follows the Ray nodes they run on (:class:`~actors.placement.NodeWatch`) and
publishes that placement to the token cache, where ``GET /v1/fleet`` and the console read it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from streamdycoke import EncoderSpec

from .camera_stats import CameraStats
from .config import CameraConfig, KafkaSettings, RedisSettings, encoder_refusal
from .placement import CAMERA_RESOURCE, NodeWatch
from .ray_actor import CameraActor

__all__ = ["CameraRefused", "CameraSupervisor"]

log = logging.getLogger(__name__)


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
        self.node_watch = NodeWatch()  # the Ray nodes and Serve's replicas, as last read

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

    @property
    def nodes(self) -> dict[str, dict]:
        """Node id -> ``{"alive", "role", "resources"}`` as :meth:`watch_nodes` last read them."""
        return self.node_watch.nodes

    @property
    def nodes_lost(self) -> int:
        """Nodes seen alive and then dead since this supervisor started."""
        return self.node_watch.lost

    def watch_nodes(self) -> dict[str, dict]:
        """Update and return :attr:`nodes` from Ray's node table; a node seen alive and now dead is counted
        in :attr:`nodes_lost` and logged with the cameras it carried (Ray restarts them where slots are free)."""
        return self.node_watch.update(self.camera_nodes)

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
        """Where Serve's replicas run (:meth:`NodeWatch.replicas`); None without Ray's state API."""
        return self.node_watch.replicas(every_s)

    def placement(self) -> dict:
        """The cameras running (with their restarts and node), refused and not placed (with why), the
        cluster's nodes (alive or not, role, resources, cameras on each), nodes lost, and where Serve's
        replicas run (None without Ray's state API)."""
        nodes = self.node_watch.with_cameras(self.camera_nodes)
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
