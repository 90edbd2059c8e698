"""How a reader is given a compressed stream: the kept past, then the newest frame whole.

A compressed stream drops a token where it repeats the one the stream already holds at that position.
A reader given only the kept tokens (a video LLM given a pruned sequence, or any attention model with
dropped slots masked out) reads a missing token as "nothing there": a still object kept only at the
frame it appeared in looks gone a few frames later. So every reader of this project (the eval's
answerer, the standing-query answerers and the LLM's input builder) is given the same thing:

1. every kept token of the frames *before* the newest one, at its own frame and position, in frame
   order, then
2. the now frame: the newest frame the camera processed, **whole**, as the encoder saw it (the camera
   worker stores it beside the segments, :meth:`streamdycoke.store.TokenStore.put_live`; a frame its
   sampler skipped since was judged unchanged from it).

The now frame's tokens are given to the reader and are counted in its visual tokens: a window of ``F``
frames costs the kept tokens of its first ``F - 1`` plus one frame. On the event-QA benchmark this reading
answered "is X in view now" better than restating the held tokens (the previous rule, kept below as the
fallback): a held token is stale wherever the budget could not afford the change (docs/accuracy.md).

Where no live frame is at hand (a store written before live frames, or a window whose newest stored
frame is newer than the live one, read between the two writes), the now frame restates the held state
instead (:func:`now_segment`): at every position not kept at the newest frame, its last kept token.

Two forms of one rule: :func:`reading` over stored segments, :func:`read_slots` over a ``(T, N)`` keep
mask (the eval's methods).
"""

from __future__ import annotations

import torch

from .segment import TokenSegment

__all__ = ["now_segment", "read_count", "reading", "whole"]


def now_segment(segments: list[TokenSegment]) -> TokenSegment | None:
    """The now frame of a window of one stream's segments (in frame order), or None when the newest
    segment kept every position (or nothing is held elsewhere).

    Returns a segment at the newest frame's index and time, non-keyframe, holding for every position the
    newest segment did not keep the last token kept there in the window (positions never kept in the
    window are absent: a window that starts after its last keyframe restates only what it holds).
    """
    if not segments:
        return None
    last = segments[-1]
    n, dim = last.num_positions, last.dim
    held = torch.zeros(n, dim, dtype=last.tokens.dtype)
    has = torch.zeros(n, dtype=torch.bool)
    for seg in segments:
        if seg.num_positions != n or seg.dim != dim:  # the grid changed (only at a keyframe): start over
            has.zero_()
        held[seg.positions] = seg.tokens.to(held.dtype)
        has[seg.positions] = True
    has[last.positions] = False
    positions = has.nonzero().flatten()
    if positions.numel() == 0:
        return None
    return TokenSegment(stream_id=last.stream_id, frame_index=last.frame_index, timestamp=last.timestamp,
                        positions=positions, tokens=held[positions], keyframe=False, grid=last.grid)


def whole(segment: TokenSegment) -> bool:
    """Whether ``segment`` holds every position of its frame (a keyframe, or a live frame)."""
    return segment.num_kept == segment.num_positions


def reading(segments: list[TokenSegment], live: TokenSegment | None = None) -> list[TokenSegment]:
    """What a reader is given for a window of one stream's segments (in frame order).

    ``live``: the newest processed frame, whole (:meth:`~streamdycoke.store.TokenStore.live_raw`), appended when
    it is at least as new as the window's newest segment (and of its grid). A window whose last segment
    is whole (a live frame appended, by this call or by the store's
    :meth:`~streamdycoke.store.DecodedReads.reader_window_raw`, or a keyframe) reads as the segments of
    older frames, then that frame (a trailing whole frame older than the one before it is set aside);
    any other window as its segments, then the held now frame (:func:`now_segment`).
    """
    if live is not None and (not segments or (live.frame_index >= segments[-1].frame_index
                                              and live.num_positions == segments[-1].num_positions
                                              and live.dim == segments[-1].dim)):
        segments = [*segments, live]
    if len(segments) >= 2 and whole(segments[-1]) and segments[-1].frame_index < segments[-2].frame_index:
        segments = segments[:-1]  # a live frame older than the window's newest (read between two writes)
    if segments and whole(segments[-1]):
        last = segments[-1]
        return [s for s in segments[:-1] if s.frame_index < last.frame_index] + [last]
    now = now_segment(segments)
    return list(segments) if now is None else [*segments, now]


def read_count(keep: torch.Tensor, t: int, since: int = 0) -> int:
    """Tokens a reader is given at frame ``t`` of a ``(T, N)`` keep mask, reading frames ``since..t``:
    the kept tokens of frames ``since..t-1``, then frame ``t`` whole."""
    return int(keep[since:t].bool().sum()) + int(keep.shape[1])
