"""How a reader is given a compressed stream: the kept tokens, then the held state restated "now".

A compressed stream drops a token where it repeats the one the stream already holds at that position.
A reader given only the kept tokens (a video LLM given a pruned sequence, or any attention model with
dropped slots masked out) reads a missing token as "nothing there": a still object kept only at the
frame it appeared in looks gone a few frames later. So every reader of this project (the eval's
answerer, the standing-query answerers and the LLM's input builder) is given the same thing:

1. every kept token at its own frame and position, in frame order, then
2. one "now" frame: at every position *not* kept at the newest frame, the token the stream holds
   there (its last kept token), so the newest frame reads whole, as the stream means it.

The now frame's tokens are given to the reader and are counted in its visual tokens. A stream that
kept the newest frame whole (uncompressed, or a keyframe) has no now frame.

Two forms of one rule: :func:`now_segment` over stored segments, :func:`now_slots` over a ``(T, N)``
keep mask (the eval's methods).
"""

from __future__ import annotations

import torch

from .segment import TokenSegment

__all__ = ["now_segment", "now_slots", "reading"]


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


def reading(segments: list[TokenSegment]) -> list[TokenSegment]:
    """What a reader is given for a window: its segments, then the now frame (:func:`now_segment`) if any."""
    now = now_segment(segments)
    return list(segments) if now is None else [*segments, now]


def now_slots(keep: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The now frame at frame ``t`` of a ``(T, N)`` bool keep mask over every frame in.

    Returns ``(positions (M,), frames (M,))`` long: each position not kept at ``t`` that holds a token
    (kept at some frame ``<= t``), and the frame of the token it holds (its last kept one).
    """
    k = keep[: t + 1].bool()
    T1, N = k.shape
    idx = torch.where(k, torch.arange(T1).unsqueeze(1).expand(T1, N), torch.full((T1, N), -1))
    last = idx.max(0).values  # (N,)
    positions = ((last >= 0) & ~k[t]).nonzero().flatten()
    return positions, last[positions]
