"""Keep masks at matched budgets: what each method keeps of a stream at a share of tokens, and the share a
reader is given (kept tokens plus the now frame, :mod:`streamdycoke.reading`), so every method is
compared at the budget it is read at.

On a long stream (``read_window``) a question reads its window of the last ``read_window`` frames and
the now frame: the streaming methods run once over the whole stream, the offline ones (which need a
clip) on each question's window, as they would be deployed on a live camera. Also the compressed
training streams the answerer learns to read (:func:`training_masks`).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from ..policy import ThresholdPolicy
from ..reading import read_count
from ..stream import StreamConfig
from .answerer import read_start
from .data import EncodedStream
from .methods import keep_mask, live_frame, mask_of, stream_mask

__all__ = ["STREAMING", "matched_keeps", "method_keeps", "read_share", "stored_share", "training_masks"]


# the streaming compressor's settings in the answerer's training masks (the defaults of 2026-11)
TRAINING_STREAM_CONFIG = StreamConfig(window=16, keyframe_share=None, refresh=0.0)


def training_masks(streams: list[EncodedStream], *, methods=("uniform", "ttm", "evs", "stream"), per_stream: int = 4,
                   budgets: tuple[float, float] = (0.04, 0.6), window: int = 16, seed: int = 0,
                   progress: bool = True) -> list[list[torch.Tensor]]:
    """Compressed versions of training streams for the answerer to learn to read pruned streams: for each
    stream, ``per_stream`` masks, each of a random method of ``methods`` at a random budget (log-uniform
    in ``budgets``). Training streams only: the test split is never compressed for training."""
    rng = np.random.default_rng(seed + 777)
    out = []
    for s in tqdm(streams, desc="training masks", unit="stream", disable=not progress, file=sys.stderr):
        ms = []
        for _ in range(per_stream):
            m = str(rng.choice(methods))
            r = float(np.exp(rng.uniform(np.log(budgets[0]), np.log(budgets[1]))))
            if m == "stream":  # pinned, so the answerer's recipe does not move with the compressor's defaults
                ms.append(stream_mask(s, r, ThresholdPolicy(), config=TRAINING_STREAM_CONFIG))
            else:
                ms.append(keep_mask(m, s, r, window=window))
        out.append(ms)
    return out


def read_share(keeps: list, items: list[tuple[EncodedStream, list]], read_window: int | None = None) -> float:
    """The share of tokens a reader is given (:mod:`streamdycoke.reading`: the kept tokens before the
    question's frame, then that frame whole). Without ``read_window``: each stream's kept tokens before
    its questions' frames plus the now frame (the mean over its questions), over every frame in. With it
    (long streams): per question, over its window's frames. ``keeps[i]``: a mask, or one per question
    (see :func:`predict`)."""
    given = total = 0.0
    for k, (_, qs) in zip(keeps, items):
        per_q = k if isinstance(k, (list, tuple)) else [k] * len(qs)
        if read_window is None:
            full = mask_of(per_q[0])
            # the stream's kept tokens, and for each question its live frame whole in place of what was kept
            # of that frame: the mean over the questions
            now = []
            for q, kq in zip(qs, per_q):
                m, f = mask_of(kq), live_frame(kq, q.t)
                now.append(m.shape[1] - float(m[f].sum()))
            given += float(full.sum()) + (float(np.mean(now)) if now else 0.0)
            total += full.numel()
            continue
        for q, kq in zip(qs, per_q):
            s0 = read_start(q.t, read_window)
            m, f = mask_of(kq), live_frame(kq, q.t)
            given += read_count(m, f, s0) if f >= s0 else m.shape[1]
            total += (q.t - s0 + 1) * m.shape[1]
    return given / total


def stored_share(keeps: list, items: list[tuple[EncodedStream, list]]) -> float:
    """The share of tokens the method stored: of every frame in (a per-question mask: of its window's)."""
    kept = total = 0.0
    for k, (_, qs) in zip(keeps, items):
        if isinstance(k, (list, tuple)):
            for kq, q in zip(k, qs):
                kq = mask_of(kq)
                rows = kq.any(1).nonzero().flatten()
                if rows.numel():
                    kept += float(kq.sum())
                    total += (q.t + 1 - int(rows[0])) * kq.shape[1]
        else:
            kept += float(mask_of(k).sum())
            total += mask_of(k).numel()
    return kept / max(total, 1.0)


STREAMING = ("stream", "stream-net")  # methods that run causally over the whole stream; the others see a clip


def method_keeps(method: str, stream: EncodedStream, questions: list, r: float, *, net=None, window: int = 16,
                 read_window: int | None = None):
    """``method``'s keep mask of ``stream`` at ``r``; with ``read_window`` an offline method (which needs
    the whole clip) is run on each question's window (``(T, N)`` masks, one per question), as it would be
    deployed on a live camera, while a streaming one runs once over the whole stream."""
    if read_window is None or method in STREAMING:
        return keep_mask(method, stream, r, net=net, window=window)
    T, N, _ = stream.tokens.shape
    tokens = stream.tokens.float()  # once per stream: the clips are views of it
    out = []
    for q in questions:
        s0 = read_start(q.t, read_window)
        clip = EncodedStream(None, tokens[s0:q.t + 1], stream.thumbs[s0:q.t + 1],
                             stream.timestamps[s0:q.t + 1])
        k = torch.zeros(T, N, dtype=torch.bool)
        k[s0:q.t + 1] = keep_mask(method, clip, r, net=net, window=window)
        out.append(k)
    _release_freed_memory()
    return out


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc): thousands of clip-sized temporaries otherwise
    fragment the heap until a long-stream eval runs out of memory (measured: 9.8 GB for 12 streams of EVS
    without, 1.3 GB with the mmap threshold fixed). A no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def matched_keeps(method: str, streams: list[EncodedStream], items, r: float, *, net=None,
                  window: int = 16, read_window: int | None = None) -> tuple[list, float]:
    """``method``'s keep masks whose read share (:func:`read_share`: now frames included) is ``r``: run at
    ``r``, then once more at ``r`` scaled down by what the now frames added. Returns the masks and the share."""
    def run(rr: float) -> list:
        return [method_keeps(method, s, qs, rr, net=net, window=window, read_window=read_window)
                for s, (_, qs) in zip(streams, items)]

    keeps = run(r)
    share = read_share(keeps, items, read_window)
    if share > r * 1.01:
        keeps = run(max(1e-3, r * r / share))
        share = read_share(keeps, items, read_window)
    return keeps, share
