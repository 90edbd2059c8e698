"""A camera actor's encoder when the application runs the encoder as a service
(:class:`deployments.encoder.EncoderDeployment`): the same :class:`~streamdycoke.encoders.Encoder`
interface, each frame sent through a Serve deployment handle and batched there with other cameras'."""

from __future__ import annotations

import numpy as np
import torch

from streamdycoke import EncoderSpec
from streamdycoke.encoders import encoder_shape

__all__ = ["RemoteEncoder"]


class RemoteEncoder:
    """Encodes through ``handle`` (a Serve ``DeploymentHandle`` of the encoder deployment).

    Args:
        spec: what the deployment runs (the grid, width and input size are read from it, no weights).
        handle: the deployment's handle.
        timeout_s: a frame not encoded by then raises (the camera's batch fails and is retried whole).
    """

    def __init__(self, spec: EncoderSpec, handle, timeout_s: float = 30.0) -> None:
        shape = encoder_shape(spec)
        self.name = spec.name
        self.grid, self.dim, self.input_size = shape.grid, shape.dim, shape.input_size
        self.timeout_s = timeout_s
        self._handle = handle

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, N, D)`` float32; the B frames are sent at once and batched remotely."""
        calls = [self._handle.encode.remote(np.ascontiguousarray(f)) for f in frames]
        return torch.from_numpy(np.stack([c.result(timeout_s=self.timeout_s) for c in calls]))
