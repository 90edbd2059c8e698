"""Snapshots: a small JPEG of a camera's processed frame about once a second, for the console and alerts.

No raw video is stored: a snapshot is a downscaled still (longest side ``max_side`` pixels), taken of a
frame the compressor processed, so it shows exactly what the kept tokens were cut from. The camera
worker writes each batch's snapshots to the token cache after the batch's segments (same retention:
they are trimmed with the frames), and an alert copies the snapshot its answer saw as evidence
(:meth:`actors.token_cache.RedisTokenStore.keep_evidence`).
"""

from __future__ import annotations

import io

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SnapshotConfig", "SnapshotTaker", "jpeg_snapshot"]


class SnapshotConfig(BaseModel):
    """How often a camera's snapshot is taken and how large it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_s: float = Field(1.0, gt=0, description="at most one snapshot per this many seconds of capture time")
    max_side: int = Field(320, ge=16, le=1920, description="the JPEG's longest side, pixels (never upscaled)")
    quality: int = Field(70, ge=10, le=95, description="JPEG quality")


def jpeg_snapshot(rgb: np.ndarray, max_side: int = 320, quality: int = 70) -> bytes:
    """``rgb`` ``(H, W, 3)`` uint8 -> JPEG bytes, downscaled so its longest side is at most ``max_side``."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb))
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class SnapshotTaker:
    """Decides which processed frames get a snapshot: the first, then one per ``every_s`` of capture time."""

    def __init__(self, config: SnapshotConfig) -> None:
        self.config = config
        self.last_ts: float | None = None

    def due(self, ts: float) -> bool:
        return self.last_ts is None or ts - self.last_ts >= self.config.every_s or ts < self.last_ts

    def take(self, frame_index: int, ts: float, rgb: np.ndarray) -> tuple[int, float, bytes] | None:
        """``(frame index, capture time, JPEG)`` if a snapshot is due at ``ts``, else None."""
        if not self.due(ts):
            return None
        self.last_ts = ts
        return frame_index, ts, jpeg_snapshot(rgb, self.config.max_side, self.config.quality)
