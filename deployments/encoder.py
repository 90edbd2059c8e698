"""The vision encoder as a Serve deployment: the frames camera actors choose to process, batched across
cameras into one forward pass (GPU replicas in production, on the GPU worker group; CPU here).

A camera actor keeps its sampler, policy, sliding window and cache writes and sends only the frames it
processes (:class:`actors.encoder_client.RemoteEncoder`); a per-actor encoder stays the default for
small setups (``AppArgs.encoder`` unset). The real LLaVA-OneVision tower (SigLIP-400M at 384²) costs
seconds per frame on a CPU core, so with real weights on a cluster this is the placement that works.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, deque

import numpy as np
from ray import serve

from streamdycoke import EncoderSpec

__all__ = ["ENCODER_DEPLOYMENT", "EncoderDeployment"]

ENCODER_DEPLOYMENT = "EncoderDeployment"


@serve.deployment(name=ENCODER_DEPLOYMENT)
class EncoderDeployment:
    """Batches single frames from many cameras; ``max_batch_size`` and ``batch_wait_timeout_s`` come from
    :class:`~deployments.config.EncoderServiceArgs`.

    Args:
        spec: the encoder (the application's model: its vision tower).
        max_batch_size: frames per forward pass at most.
        batch_wait_timeout_s: how long the first frame of a batch waits for others.
    """

    def __init__(self, spec: EncoderSpec, max_batch_size: int = 16, batch_wait_timeout_s: float = 0.005) -> None:
        from actors.metrics import EncoderMetrics
        from streamdycoke import build_encoder

        self.encoder = build_encoder(spec)
        self._encode.set_max_batch_size(max_batch_size)
        self._encode.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._lock = threading.Lock()  # one forward pass at a time (batches run in a worker thread)
        self.batch_sizes: Counter[int] = Counter()
        self.recent_s: deque[float] = deque(maxlen=2000)
        self.frames = 0
        self.metrics = EncoderMetrics()

    async def encode(self, frame: np.ndarray) -> np.ndarray:
        """One ``(H, W, 3)`` uint8 frame -> its ``(N, D)`` float32 tokens."""
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8):
            raise ValueError(f"frame must be an (H, W, 3) uint8 array, got {getattr(frame, 'shape', type(frame))}")
        return await self._encode(frame)

    @serve.batch
    async def _encode(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return await asyncio.get_running_loop().run_in_executor(None, self._forward, frames)

    def _forward(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        import time

        out: list[np.ndarray | None] = [None] * len(frames)
        by_shape: dict[tuple, list[int]] = {}
        for i, f in enumerate(frames):  # frames of one size go through together
            by_shape.setdefault(f.shape, []).append(i)
        with self._lock:
            t0 = time.perf_counter()
            for idx in by_shape.values():
                tokens = self.encoder.encode(np.stack([frames[i] for i in idx])).numpy()
                for j, i in enumerate(idx):
                    out[i] = tokens[j]
            dt = time.perf_counter() - t0
            self.batch_sizes[len(frames)] += 1
            self.frames += len(frames)
            self.recent_s.append(dt)
        self.metrics.forward(len(frames), dt)
        return out

    def stats(self) -> dict:
        """Batches by size, frames encoded, and the mean forward pass (ms) of the recent batches."""
        with self._lock:
            n = sum(self.batch_sizes.values())
            return {"frames": self.frames, "batches": n, "batch_sizes": dict(sorted(self.batch_sizes.items())),
                    "mean_batch": self.frames / n if n else None,
                    "forward_ms_mean": 1e3 * sum(self.recent_s) / len(self.recent_s) if self.recent_s else None}
