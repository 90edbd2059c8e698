"""Token selection methods compared at matched budgets, each as a keep mask over every frame in.

A method maps a stream's tokens ``(T, N, D)`` (every frame, skipped ones included) to a keep mask
``(T, N)`` bool at a target share ``r`` of the ``T * N`` tokens:

- ``uniform``: ``round(r * T)`` whole frames, evenly spaced (the first included): frame sampling.
- ``ttm``: paper-faithful DyCoke TTM (:func:`~streamdycoke.ttm.dycoke_ttm`); its window's first
  frame is whole, so below 25% the window grows (4, 8, 16, ...) until the budget allows it.
- ``evs``: vLLM's Efficient Video Sampling rule: the first frame whole, then the globally most
  dissimilar tokens to the same position of the previous frame (offline: it ranks the whole clip).
- ``stream``: the streaming pipeline: frame sampler, then the streaming compressor with the
  training-free policy and rate control at ``r`` (``StreamConfig.budget_ratio``); it sees only the past.
- ``stream-net``: the same with a PolicyNet (the shipped one, or a given checkpoint).

The offline anchors see the whole clip; the streaming ones decide each frame when it arrives.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ..policy import Policy, ThresholdPolicy
from ..sampler import FrameSampler, SamplerConfig
from ..stream import StreamCompressor, StreamConfig
from ..ttm import dycoke_ttm
from .data import EncodedStream

__all__ = ["METHODS", "LiveMask", "held_index", "keep_mask", "live_frame", "mask_of", "stream_mask"]

METHODS = ("uniform", "ttm", "evs", "stream", "stream-net")


def uniform_mask(T: int, N: int, r: float) -> torch.Tensor:
    n = max(1, min(T, round(r * T)))
    keep = torch.zeros(T, N, dtype=torch.bool)
    keep[torch.linspace(0, T - 1, n).round().long()] = True
    return keep


def ttm_mask(tokens: torch.Tensor, r: float) -> torch.Tensor:
    T, N, _ = tokens.shape
    w = 4
    while 1.0 / w > r and w < T:
        w *= 2
    whole = math.ceil(T / w)
    judged = T - whole
    per = (r * T * N - whole * N) / max(1, judged * N)  # keep ratio of a judged frame
    merge = 1.0 - min(1.0, max(0.0, per))
    res = dycoke_ttm(tokens.float(), merge_ratio=merge, window=w)
    keep = torch.zeros(T, N, dtype=torch.bool)
    keep[res.index[:, 0], res.index[:, 1]] = True
    return keep


def evs_mask(tokens: torch.Tensor, r: float) -> torch.Tensor:
    T, N, _ = tokens.shape
    keep = torch.zeros(T, N, dtype=torch.bool)
    keep[0] = True
    extra = round(r * T * N) - N
    if extra > 0 and T > 1:
        x = tokens.float()
        dissim = 1.0 - F.cosine_similarity(x[1:], x[:-1], dim=-1)  # (T-1, N)
        top = dissim.flatten().topk(min(extra, dissim.numel())).indices
        rest = torch.zeros((T - 1) * N, dtype=torch.bool)
        rest[top] = True
        keep[1:] = rest.view(T - 1, N)
    return keep


@dataclasses.dataclass
class LiveMask:
    """A streaming method's keep mask with, per frame, the newest frame it processed by then: the live
    frame a reader asking at that frame is given whole (:mod:`streamdycoke.reading`; the camera stores
    its newest processed frame). Offline methods see every frame: their masks are plain tensors, the live
    frame the question's own.

    Attributes:
        mask: ``(T, N)`` bool, the kept positions of each frame.
        live: ``(T,)`` long, the newest processed frame at or before each frame.
    """

    mask: torch.Tensor
    live: torch.Tensor


def mask_of(keep) -> torch.Tensor:
    """The ``(T, N)`` keep mask of a method's keep (a tensor, or a :class:`LiveMask`)."""
    return keep.mask if isinstance(keep, LiveMask) else keep


def live_frame(keep, t: int) -> int:
    """The frame a reader asking at frame ``t`` is given whole: the newest processed one (``t`` itself
    for a method that sees every frame)."""
    return int(keep.live[t]) if isinstance(keep, LiveMask) else t


def stream_mask(stream: EncodedStream, r: float, policy: Policy, *, window: int = 16,
                sampler: SamplerConfig | None = None, config: StreamConfig | None = None,
                live: bool = False) -> torch.Tensor | LiveMask:
    """Run the real sampler (processing at least the budget's share of frames) and streaming compressor
    frame by frame; the kept positions of each frame. ``config``: the compressor's (its budget set to ``r``).
    ``live``: a :class:`LiveMask` (with the newest processed frame at each frame), else the mask alone."""
    T, N, _ = stream.tokens.shape
    side = int(math.isqrt(N))
    grid = (side, N // side)
    samp = FrameSampler((sampler or SamplerConfig()).for_budget(r))
    cfg = dataclasses.replace(config, budget_ratio=r) if config is not None else StreamConfig(window=window, budget_ratio=r)
    comp = StreamCompressor(cfg, policy)
    state = comp.new_state("eval")
    keep = torch.zeros(T, N, dtype=torch.bool)
    newest = torch.zeros(T, dtype=torch.long)
    last = 0
    for t, ts in enumerate(stream.timestamps):
        d = samp.decide_thumbnail(stream.thumbs[t], ts)
        if d.process:
            seg = comp.process(state, stream.tokens[t], grid, t, ts, pixel_change=d.pixel_change,
                               scene_cut=d.scene_cut)
            keep[t, seg.positions] = True
            last = t
        newest[t] = last
    return LiveMask(keep, newest) if live else keep


def keep_mask(method: str, stream: EncodedStream, r: float, *, net: Policy | None = None,
              window: int = 16) -> torch.Tensor | LiveMask:
    """``(T, N)`` bool: the tokens ``method`` keeps of ``stream`` at target share ``r`` (a streaming method's
    as a :class:`LiveMask`: its reader's live frame is the newest it processed)."""
    T, N, _ = stream.tokens.shape
    if method == "uniform":
        return uniform_mask(T, N, r)
    if method == "ttm":
        return ttm_mask(stream.tokens, r)
    if method == "evs":
        return evs_mask(stream.tokens, r)
    if method == "stream":
        return stream_mask(stream, r, ThresholdPolicy(), window=window, live=True)
    if method == "stream-net":
        if net is None:
            raise ValueError("stream-net needs a PolicyNet")
        if hasattr(net, "with_target") and getattr(net, "calibration", torch.zeros(0)).shape[0] >= 2:
            net.with_target(r)
        return stream_mask(stream, r, net, window=window, live=True)
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def held_index(keep: torch.Tensor) -> torch.Tensor:
    """``(T, N)`` long: for every frame and position, the frame whose token the stream holds there
    (the last kept at or before it; -1 before any)."""
    T, N = keep.shape
    idx = torch.where(keep, torch.arange(T).unsqueeze(1).expand(T, N), torch.full((T, N), -1))
    return torch.cummax(idx, dim=0).values
