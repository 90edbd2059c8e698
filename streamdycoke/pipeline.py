"""The per-frame path of one stream: frame sampler -> encoder -> streaming compressor.

:class:`FramePipeline` is plain Python with no I/O: the CLI drives it over a video file, and a
camera actor drives it over frames from Kafka, writing the segments it returns to a token store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .config import PipelineConfig
from .encoders import Encoder, build_encoder
from .policy import build_policy
from .sampler import FrameSampler, SamplerDecision
from .segment import TokenSegment
from .stream import StreamCompressor, StreamState

__all__ = ["FrameOutcome", "FramePipeline", "build_pipeline"]


@dataclass(frozen=True)
class FrameOutcome:
    """What became of one frame: ``segment`` is None when the sampler skipped it.

    ``tokens`` is the ``(N, D)`` encoder output when ``keep_tokens`` was asked (for analysis).
    """

    frame_index: int
    segment: TokenSegment | None
    pixel_change: float
    encode_s: float = 0.0
    compress_s: float = 0.0
    tokens: torch.Tensor | None = None
    scene_cut: bool = False  # the sampler cut here (a scene change)


class FramePipeline:
    """One stream's sampler, encoder and compressor, with the stream's state.

    Args:
        stream_id: the stream's id.
        encoder: frame -> tokens.
        compressor: the stream's compressor.
        sampler: adaptive frame rate; None processes every frame.
        state: a state to resume from (e.g. rebuilt from the store), else a fresh one.
    """

    def __init__(
        self,
        stream_id: str,
        encoder: Encoder,
        compressor: StreamCompressor,
        sampler: FrameSampler | None = None,
        state: StreamState | None = None,
    ) -> None:
        self.encoder = encoder
        self.compressor = compressor
        self.sampler = sampler
        self.state = state if state is not None else compressor.new_state(stream_id)
        self.frames_in = 0
        self.frames_skipped = 0

    def push(self, frame: np.ndarray, frame_index: int, timestamp: float, *, keep_tokens: bool = False,
             decision: SamplerDecision | None = None) -> FrameOutcome:
        """Run one ``(H, W, 3)`` uint8 frame through the stream.

        ``decision``: the frame sampler's decision already taken upstream (ingest samples at the edge
        and sends only the frames to process); this stream's own sampler then does not run.
        """
        self.frames_in += 1
        change, cut = 0.0, False
        d = decision
        if d is None and self.sampler is not None:
            d = self.sampler.decide(frame, timestamp)
        if d is not None:
            change, cut = d.pixel_change, d.scene_cut
            if not d.process:
                self.frames_skipped += 1
                return FrameOutcome(frame_index, None, change)
        t0 = time.perf_counter()
        if cut and hasattr(self.encoder, "reset"):  # a scene cut: a differential encoder encodes this frame whole
            self.encoder.reset()
        tokens = self.encoder.encode(frame[None])[0]
        t1 = time.perf_counter()
        seg = self.compressor.process(
            self.state, tokens, self.encoder.grid, frame_index, timestamp, pixel_change=change, scene_cut=cut
        )
        t2 = time.perf_counter()
        return FrameOutcome(frame_index, seg, change, t1 - t0, t2 - t1, tokens if keep_tokens else None, cut)


    def live_segment(self, frame_index: int, timestamp: float, tokens: torch.Tensor) -> TokenSegment:
        """The live frame: a processed frame's ``(N, D)`` encoder output (:meth:`push` with ``keep_tokens``)
        whole, every position at the stored precision: the now frame a reader is given
        (:mod:`streamdycoke.reading`). The camera's newest processed frame: a frame the sampler skipped since
        was judged unchanged from it, so the live frame costs no encoder work. The stream's state is not
        touched."""
        n = tokens.shape[0]
        dtype = getattr(torch, self.compressor.config.token_dtype)
        return TokenSegment(stream_id=self.state.stream_id, frame_index=frame_index, timestamp=timestamp,
                            positions=torch.arange(n), tokens=tokens.to(dtype), keyframe=False,
                            grid=tuple(self.encoder.grid))


def build_pipeline(stream_id: str, config: PipelineConfig | None = None, *, state: StreamState | None = None,
                   encoder: Encoder | None = None) -> FramePipeline:
    """One stream's :class:`FramePipeline` from its :class:`~streamdycoke.config.PipelineConfig`.

    ``encoder``: an already loaded encoder for ``config.encoder`` (else it is loaded); with
    ``config.differential`` it is wrapped in this stream's
    :class:`~streamdycoke.encoders.differential.DifferentialEncoder` (an encoder with a ``reset`` method,
    such as a remote one that keeps the stream's state on its replica, is used as it is);
    ``state``: a state to resume from (e.g. :meth:`StreamState.from_segments`).
    """
    config = config or PipelineConfig()
    encoder = encoder if encoder is not None else build_encoder(config.encoder)
    if config.differential is not None and not hasattr(encoder, "reset"):  # a remote encoder keeps its own
        from .encoders.differential import DifferentialEncoder

        encoder = DifferentialEncoder(encoder, config.differential)
    return FramePipeline(
        stream_id,
        encoder,
        StreamCompressor(config.stream, build_policy(config.policy)),
        FrameSampler(config.sampler) if config.sampler is not None else None,
        state,
    )
