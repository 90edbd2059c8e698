"""The vision encoder as a Serve deployment: the frames camera actors choose to process, batched across
cameras into one forward pass (GPU replicas in production, on the GPU worker group; CPU here).

A camera actor keeps its sampler, policy, sliding window and cache writes and sends only the frames it
processes (:class:`actors.encoder_client.RemoteEncoder`); a per-actor encoder stays the default for
small setups (``AppArgs.encoder`` unset, or the camera's ``encoding.at``).

A camera with differential encoding (:mod:`streamdycoke.encoders.differential`) sends its frames with its
camera as Serve's multiplexed model id: Serve routes them to the replica that holds the camera's tower
state (the least recently used camera's state is dropped past 64 per replica), and the frames of many
cameras still go through the dense layers together. A camera whose frames land on a replica without its
state (a new replica, a restart) gets a whole frame there: slower, never wrong.

The real LLaVA-OneVision tower (SigLIP-400M at 384²) costs
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
        from actors.metrics import EncoderMetrics, replica_node_gauge
        from streamdycoke import build_encoder

        replica_node_gauge("EncoderDeployment")
        self.encoder = build_encoder(spec)
        self._encode.set_max_batch_size(max_batch_size)
        self._encode.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._encode_stream.set_max_batch_size(max_batch_size)
        self._encode_stream.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.patches_computed = 0  # differential encoding: patches recomputed, of patches in
        self.patches_in = 0
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

    async def encode_stream(self, frames: np.ndarray, differential) -> np.ndarray:
        """``(B, H, W, 3)`` uint8, consecutive frames of one camera (Serve's multiplexed model id; call with
        ``handle.options(multiplexed_model_id=camera)``) -> ``(B, N, D)`` float32, encoded differentially
        against that camera's state on this replica (``differential``: its
        :class:`~streamdycoke.encoders.differential.DifferentialConfig`)."""
        if not (isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.shape[3] == 3 and frames.dtype == np.uint8):
            raise ValueError(f"frames must be a (B, H, W, 3) uint8 array, got {getattr(frames, 'shape', type(frames))}")
        if not hasattr(self.encoder, "encode_differential"):
            raise ValueError(f"encoder {self.encoder.name!r} has no differential encoding")
        holder = await self._camera(serve.get_multiplexed_model_id() or "")
        return await self._encode_stream((frames, holder, differential))

    @serve.multiplexed(max_num_models_per_replica=64)
    async def _camera(self, camera: str):
        """The camera's tower state on this replica (Serve drops the least recently used one)."""
        return _CameraState(camera, self.encoder.new_state())

    @serve.batch
    async def _encode_stream(self, items: list[tuple]) -> list[np.ndarray]:
        return await asyncio.get_running_loop().run_in_executor(None, self._forward_stream, items)

    def _forward_stream(self, items: list[tuple]) -> list[np.ndarray]:
        """Rounds: the r-th frame of every camera in the batch together (a camera's frames in order, over
        all its requests in the batch, one frame of a camera per forward pass), grouped by configuration."""
        import time

        outs: list[list[np.ndarray]] = [[] for _ in items]
        per_camera: dict[int, list[tuple[int, int]]] = {}  # a camera's frames in order, over its requests here
        for i, (f, holder, _) in enumerate(items):
            per_camera.setdefault(id(holder), []).extend((i, j) for j in range(len(f)))
        with self._lock:
            t0 = time.perf_counter()
            n = 0
            for r in range(max(len(seq) for seq in per_camera.values())):
                groups: dict = {}  # round r: each camera's r-th frame, one frame per camera
                for seq in per_camera.values():
                    if r < len(seq):
                        i, j = seq[r]
                        groups.setdefault((items[i][2], items[i][0].shape[1:]), []).append((i, j))
                for (cfg, _), picks in groups.items():
                    tokens = self.encoder.encode_differential(np.stack([items[i][0][j] for i, j in picks]),
                                                              [items[i][1].state for i, _ in picks], cfg).numpy()
                    st = self.encoder.last_stats
                    self.patches_computed += sum(st.computed)
                    self.patches_in += st.patches * len(picks)
                    for k, (i, _) in enumerate(picks):
                        outs[i].append(tokens[k])
                    n += len(picks)
            dt = time.perf_counter() - t0
            self.batch_sizes[n] += 1
            self.frames += n
            self.recent_s.append(dt)
        self.metrics.forward(n, dt)
        return [np.stack(o) for o in outs]

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
                    "forward_ms_mean": 1e3 * sum(self.recent_s) / len(self.recent_s) if self.recent_s else None,
                    "recomputed_share": self.patches_computed / self.patches_in if self.patches_in else None}


class _CameraState:
    """What Serve's model multiplexing holds for a camera on an encoder replica: its tower state."""

    def __init__(self, camera: str, state) -> None:
        self.camera, self.state = camera, state
