"""Many cameras' ingest in one process: an :class:`~actors.ingest.Ingestor` thread per camera with a
source, reconciled against the camera list, and the shard of them this process owns (``streamdycoke
ingest --config cameras.yaml --shard K/N``)."""

from __future__ import annotations

import logging
import threading

from .config import CameraConfig, IngestSettings, KafkaSettings
from .ingest import Ingestor, IngestStats
from .metrics import IngestMetrics

__all__ = ["IngestFleet", "shard_of"]

log = logging.getLogger(__name__)


def shard_of(camera: str, shards: int) -> int:
    """Which of ``shards`` ingest processes owns ``camera``: stable across processes and restarts."""
    import zlib

    return zlib.crc32(camera.encode()) % shards


class IngestFleet:
    """Runs one :class:`Ingestor` thread per camera with a source, reconciled against a camera list.

    ``reconcile(cameras)`` starts new cameras, stops removed ones and restarts changed ones; with
    ``shard=(k, n)`` this process takes only the cameras :func:`shard_of` gives to ``k``. A camera
    whose ingest gave up (source failing past ``max_reconnects``) is started again at the next
    reconcile; one whose source simply ended (a file, not looped) stays done.
    """

    def __init__(self, kafka: KafkaSettings, settings: IngestSettings, metrics: IngestMetrics | None = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        k, n = shard
        if not (n >= 1 and 0 <= k < n):
            raise ValueError(f"shard must be K/N with 0 <= K < N, got {k}/{n}")
        self.kafka, self.settings, self.metrics, self.shard = kafka, settings, metrics, shard
        self._running: dict[str, tuple[object, Ingestor, threading.Event, threading.Thread]] = {}
        self._failed: set[str] = set()

    def owns(self, camera: str) -> bool:
        return shard_of(camera, self.shard[1]) == self.shard[0]

    def reconcile(self, cameras: list[CameraConfig]) -> dict[str, list[str]]:
        """Bring the running ingestors to ``cameras`` (``CameraConfig``s); returns what changed."""
        want = {c.id: c for c in cameras if c.source and self.owns(c.id)}
        changes: dict[str, list[str]] = {"started": [], "stopped": []}
        for cam, (cfg, _, stop, thread) in list(self._running.items()):
            if cam not in want or want[cam] != cfg or cam in self._failed:
                stop.set()
                thread.join(timeout=30)
                del self._running[cam]
                self._failed.discard(cam)
                changes["stopped"].append(cam)
        for cam, cfg in want.items():
            if cam in self._running:
                continue
            settings = self.settings.model_copy(update={"options": {**self.settings.options, **cfg.source_options},
                                                         "size": cfg.frame_size(self.settings.size)})
            ing = Ingestor(cam, cfg.source, self.kafka, settings, self.metrics, sampler=cfg.frame_sampler)
            stop = threading.Event()
            thread = threading.Thread(target=self._run, args=(ing, stop), name=f"ingest-{cam}", daemon=True)
            thread.start()
            self._running[cam] = (cfg, ing, stop, thread)
            changes["started"].append(cam)
        return changes

    def _run(self, ing: Ingestor, stop: threading.Event) -> None:
        try:
            ing.run(stop)
        except Exception:  # given up on its source: logged; the next reconcile starts it again
            log.exception("camera %s: ingest gave up on its source", ing.camera)
            self._failed.add(ing.camera)

    def any_failed(self) -> bool:
        """True when some camera's ingest gave up (the next reconcile restarts it)."""
        return bool(self._failed)

    @property
    def cameras(self) -> list[str]:
        return sorted(self._running)

    def stats(self) -> dict[str, IngestStats]:
        return {cam: ing.stats for cam, (_, ing, _, _) in self._running.items()}

    def stop(self) -> None:
        for _, _, stop, _ in self._running.values():
            stop.set()
        for cam, (_, _, _, thread) in list(self._running.items()):
            thread.join(timeout=30)
        self._running.clear()
