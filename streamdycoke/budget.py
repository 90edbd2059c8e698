"""Every visual-token count in StreamDyCoke comes from this module.

Prompt builders size their video placeholders, buffers are allocated and tests check kept counts by
asking these functions; nothing else multiplies a ratio by a token count.
"""

from __future__ import annotations

import math
from typing import Iterable

__all__ = ["frame_token_budget", "ttm_frame_budgets", "ttm_retained_count", "window_visual_tokens"]

# Guards the floor against binary rounding: 0.29 * 100 is 28.999999999999996 in floating point,
# and a keep ratio of 0.29 of 100 tokens must keep 29, not 28.
_EPS = 1e-9


def frame_token_budget(num_tokens: int, keep_ratio: float) -> int:
    """Number of tokens one frame keeps: ``floor(keep_ratio * num_tokens)``, clamped to [0, N].

    DyCoke keeps ``int((1 - K) * N)`` tokens of a judged frame; with ``keep_ratio = 1 - K`` this is
    that count (T=32, N=196, K=0.7 keeps 58 per judged frame).
    """
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    if not (0.0 <= keep_ratio <= 1.0) or math.isnan(keep_ratio):
        raise ValueError(f"keep_ratio must be in [0, 1], got {keep_ratio}")
    return min(num_tokens, max(0, math.floor(keep_ratio * num_tokens + _EPS)))


def ttm_frame_budgets(num_frames: int, num_tokens: int, merge_ratio: float, window: int = 4) -> list[int]:
    """Per-frame kept counts of paper-faithful DyCoke TTM (:func:`streamdycoke.dycoke_ttm`).

    The first frame of every window of ``window`` frames is kept whole; every other frame keeps
    ``frame_token_budget(N, 1 - merge_ratio)``. A trailing partial window follows the same rule.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0.0 <= merge_ratio <= 1.0:
        raise ValueError(f"merge_ratio must be in [0, 1], got {merge_ratio}")
    judged = frame_token_budget(num_tokens, 1.0 - merge_ratio)
    return [num_tokens if t % window == 0 else judged for t in range(num_frames)]


def ttm_retained_count(num_frames: int, num_tokens: int, merge_ratio: float, window: int = 4) -> int:
    """Total tokens paper-faithful DyCoke TTM keeps of a ``(T, N, D)`` clip.

    >>> ttm_retained_count(32, 196, 0.7)
    2960
    """
    return sum(ttm_frame_budgets(num_frames, num_tokens, merge_ratio, window))


def window_visual_tokens(kept_per_frame: Iterable[int], extra_tokens: int) -> int:
    """Visual tokens an LLM reads for a window of stored frames: every kept token, plus the host's
    always-kept extras (LLaVA-OneVision's ``image_newline``: 1 per video; Qwen2-VL: 0).

    The LLM batcher sizes batches with it and the answer reports it, so the two agree.

    >>> window_visual_tokens([196, 12, 0, 30], extra_tokens=1)
    239
    """
    if extra_tokens < 0:
        raise ValueError(f"extra_tokens must be >= 0, got {extra_tokens}")
    return sum(kept_per_frame) + extra_tokens
