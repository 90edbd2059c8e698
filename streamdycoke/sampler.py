"""Adaptive frame rate: decide from pixels alone, before any encoder runs, whether to process a frame.

The cost is one strided downscale and a mean absolute difference against the last processed frame's
thumbnail (microseconds), far below any vision encoder.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FrameSampler", "SamplerConfig", "SamplerDecision", "thumbnail"]


@dataclass(frozen=True)
class SamplerConfig:
    """When a frame is processed: at a rate between two bounds that follows how much the scene changes.

    Attributes:
        min_fps: process at least this often, however still the scene.
        max_fps: never process more often than this.
        change_threshold: mean absolute pixel change (0..1) of the thumbnail against the last
            processed frame above which the scene counts as changing.
        scene_cut_threshold: change above which the frame is a scene cut (forces a keyframe).
        thumb_size: side of the grey thumbnail the change is measured on.
        min_share: process at least this share of the frames in, however still the scene (0: no
            such floor): each frame in adds ``min_share`` to what is owed, a frame is due when a whole
            one is owed, and every processed frame pays one. Under rate control
            (``StreamConfig.budget_ratio``) it is 1: every frame is processed (:meth:`for_budget`).
    """

    min_fps: float = 1.0
    max_fps: float = 15.0
    change_threshold: float = 0.015
    scene_cut_threshold: float = 0.25
    thumb_size: int = 32
    min_share: float = 0.0

    def for_budget(self, budget_ratio: float | None) -> "SamplerConfig":
        """This config under a token budget (``StreamConfig.budget_ratio``): processing every frame in
        (unchanged for None). Under a budget the compressor decides what the tokens are spent on; what the
        sampler would save is encoder work, and a frame it skips leaves the reader's live frame (the newest
        processed frame, :mod:`streamdycoke.reading`) behind the scene. On 48 event-QA validation streams
        (tools/eval_variants.py), processing at least twice the budget's share of frames and skipping the
        still rest answered 6.1 points below uncompressed at 15% of tokens, processing every frame 0.7
        (docs/accuracy.md). Without a budget the sampler adapts the frame rate as configured."""
        if budget_ratio is None:
            return self
        return dataclasses.replace(self, min_share=1.0)

    def __post_init__(self) -> None:
        if not 0 < self.min_fps <= self.max_fps:
            raise ValueError(f"need 0 < min_fps <= max_fps, got {self.min_fps}, {self.max_fps}")
        if not 0 <= self.change_threshold <= self.scene_cut_threshold <= 1:
            raise ValueError("need 0 <= change_threshold <= scene_cut_threshold <= 1")
        if self.thumb_size < 2:
            raise ValueError("thumb_size must be >= 2")
        if not 0.0 <= self.min_share <= 1.0:
            raise ValueError(f"min_share must be in [0, 1], got {self.min_share}")


@dataclass(frozen=True)
class SamplerDecision:
    process: bool
    pixel_change: float
    scene_cut: bool


def thumbnail(frame: np.ndarray, size: int = 32) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB frame (its green channel, close to luma) or ``(H, W)`` uint8 grey (luma, as
    ingest has it straight from the decoder) -> ``(size, size)`` float32 grey in [0, 1], by strided block means."""
    grey = frame.ndim == 2 and frame.dtype == np.uint8
    if not grey and (frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8):
        raise ValueError(f"frame must be (H, W, 3) or (H, W) uint8, got {frame.shape} {frame.dtype}")
    h, w = frame.shape[:2]
    if h < size or w < size:
        raise ValueError(f"frame {h}x{w} is smaller than the {size}x{size} thumbnail")
    sh, sw = h // size, w // size
    # Sample every other row/column of each block: 4x fewer reads, same block means to ~1%.
    plane = frame if grey else frame[:, :, 1]  # green ~ luma
    sub = plane[: sh * size : max(1, sh // 2), : sw * size : max(1, sw // 2)]
    bh, bw = sub.shape[0] // size, sub.shape[1] // size
    sub = sub[: bh * size, : bw * size].reshape(size, bh, size, bw)
    return sub.mean(axis=(1, 3), dtype=np.float32) / 255.0


class FrameSampler:
    """Per-stream frame-rate controller. Holds the last processed thumbnail and its time."""

    def __init__(self, config: SamplerConfig | None = None) -> None:
        self.config = config or SamplerConfig()
        self._last_thumb: np.ndarray | None = None
        self._last_time: float | None = None
        self._owed = 0.0  # frames owed to min_share

    def decide(self, frame: np.ndarray, timestamp: float) -> SamplerDecision:
        """Whether to process ``frame`` (``(H, W, 3)`` uint8) captured at ``timestamp`` seconds.

        A non-finite timestamp is a ``ValueError`` and changes nothing (the sampler's clock stays valid).
        """
        if not math.isfinite(timestamp):
            raise ValueError(f"timestamp must be finite, got {timestamp}")
        return self.decide_thumbnail(thumbnail(frame, self.config.thumb_size), timestamp)

    def decide_thumbnail(self, thumb: np.ndarray, timestamp: float) -> SamplerDecision:
        """:meth:`decide` on a ``(thumb_size, thumb_size)`` float32 thumbnail already made (:func:`thumbnail`)."""
        if not math.isfinite(timestamp):
            raise ValueError(f"timestamp must be finite, got {timestamp}")
        cfg = self.config
        if thumb.shape != (cfg.thumb_size, cfg.thumb_size):
            raise ValueError(f"thumbnail must be {cfg.thumb_size}x{cfg.thumb_size}, got {thumb.shape}")
        if self._last_thumb is None or self._last_time is None:
            self._accept(thumb, timestamp)
            return SamplerDecision(True, 1.0, True)
        change = float(np.abs(thumb - self._last_thumb).mean())
        dt = timestamp - self._last_time
        cut = change >= cfg.scene_cut_threshold
        if dt < 0:  # timestamps went backwards (source restarted): start over
            self._accept(thumb, timestamp)
            return SamplerDecision(True, change, True)
        self._owed += cfg.min_share
        due = dt >= 1.0 / cfg.min_fps - 1e-6 or (cfg.min_share > 0 and self._owed >= 1.0 - 1e-9)
        allowed = dt >= 1.0 / cfg.max_fps - 1e-6
        process = due or cut or (allowed and change >= cfg.change_threshold)
        if process:
            self._accept(thumb, timestamp)
        return SamplerDecision(process, change, cut and process)

    def _accept(self, thumb: np.ndarray, timestamp: float) -> None:
        self._last_thumb = thumb
        self._last_time = timestamp
        self._owed = max(0.0, self._owed - 1.0)
