"""Frame preprocessing without torchvision: uint8 RGB frames -> normalised ``(B, 3, S, S)`` tensors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["check_frames", "to_pixel_values"]


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate ``(B, H, W, 3)`` uint8 (a single ``(H, W, 3)`` frame is given a batch axis)."""
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (B, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    return np.require(frames, requirements="W")  # torch needs writable memory: copy read-only views


def to_pixel_values(
    frames: np.ndarray, size: tuple[int, int], mean: tuple[float, float, float], std: tuple[float, float, float]
) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, size[0], size[1])`` float32, resized (bicubic, antialiased
    when shrinking), rescaled to [0, 1] and normalised with ``mean`` / ``std`` per channel."""
    frames = check_frames(frames)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 255)
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std).view(1, 3, 1, 1) * 255.0
    return (x - m) / s
