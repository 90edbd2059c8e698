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

    def __init__(self, spec: EncoderSpec, handle, timeout_s: float = 30.0, *, camera: str | None = None,
                 differential=None) -> None:
        shape = encoder_shape(spec)
        self.name = spec.name
        self.grid, self.dim, self.input_size = shape.grid, shape.dim, shape.input_size
        self.timeout_s = timeout_s
        self._handle = handle
        self.camera, self.differential = camera, differential
        if differential is not None and not camera:
            raise ValueError("differential encoding through the service needs the camera's id (its state's key)")

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, N, D)`` float32; the B frames are sent at once and batched remotely
        (with differential encoding: as one request, in order, to the replica holding the camera's state)."""
        if self.differential is not None:
            call = self._handle.options(multiplexed_model_id=self.camera).encode_stream.remote(
                np.ascontiguousarray(frames), self.differential)
            return torch.from_numpy(np.array(call.result(timeout_s=self.timeout_s)))  # a writable copy
        calls = [self._handle.encode.remote(np.ascontiguousarray(f)) for f in frames]
        return torch.from_numpy(np.stack([c.result(timeout_s=self.timeout_s) for c in calls]))

    def reset(self) -> None:
        """Nothing to forget here: a camera's differential state lives on the encoder replica (a restarted
        camera's next frames may still find it there, which is as correct as a whole frame)."""
