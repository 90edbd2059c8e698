"""``CameraFleet``: the Serve deployment that owns the camera actors on a cluster (only with ``fleet``
args, as on Kubernetes).

One replica. It reads the camera list (``fleet.cameras``, or ``fleet.cameras_file``: a mounted
ConfigMap it re-reads every ``reload_s``), starts, stops and restarts actors to match it, and
restarts a dead actor's run, which resumes from the committed offset. ``GET /v1/fleet`` shows it.
"""

import logging
import threading
from typing import Any

from ray import serve

from actors.config import CameraConfig, load_cameras

from .config import AppArgs

__all__ = ["CameraFleet"]

log = logging.getLogger(__name__)


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
        from actors.supervisor import CameraSupervisor

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
            self.metrics.publish_fleet(self.sup)
            self.reconciles += 1
        except Exception as exc:  # Ray trouble: reported, tried again next round
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("camera fleet: reconcile failed")

    def check_health(self) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("camera fleet loop is not running")

    def status(self) -> dict:
        with self._lock:
            # webhooks left out: a webhook's URL (a Slack one is itself a credential) is not shown to API clients
            placed = self.sup.placement()
            for cam, entry in placed["cameras"].items():
                entry["config"] = self.sup.configs[cam].model_dump(
                    mode="json", exclude={"webhooks": True, "standing": {"__all__": {"webhooks"}}})
            return {**placed, "reconciles": self.reconciles, "last_error": self.last_error}

    def shutdown(self) -> None:
        """Stop reconciling and stop every camera actor (each commits what it has cached)."""
        self._stop.set()
        self._thread.join(timeout=60)
        with self._lock:
            self.sup.shutdown()
