"""Frame -> tokens. Every encoder maps ``(B, H, W, 3)`` uint8 RGB frames to ``(B, N, D)`` tokens on
a fixed ``grid`` (``N = grid[0] * grid[1]``) and says which frame size it wants, so a decoder can
resize once, in C, while decoding.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .pixels import PixelEncoder

__all__ = ["Encoder", "PixelEncoder", "get_encoder", "ENCODERS"]

ENCODERS = ("pixels", "llava-onevision")


@runtime_checkable
class Encoder(Protocol):
    name: str
    grid: tuple[int, int]
    dim: int
    input_size: tuple[int, int]  # (height, width) the encoder wants frames at

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, N, D)`` float32."""


def get_encoder(name: str, **kwargs: object) -> Encoder:
    """``"pixels"`` or ``"llava-onevision"`` (kwargs: ``model``, a local path or hub id with cached weights)."""
    if name == "pixels":
        return PixelEncoder(**kwargs)  # type: ignore[arg-type]
    if name in ("llava-onevision", "llava"):
        from .llava import LlavaOnevisionEncoder

        return LlavaOnevisionEncoder(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")
