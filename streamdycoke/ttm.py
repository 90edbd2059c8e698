"""Paper-faithful DyCoke temporal token merging (TTM) over a whole clip.

Reference: Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language
Models", CVPR 2025, Sec. 3.2. This is the offline baseline the streaming compressor is compared to.

The method, for windows of 4 frames ``[f0, f1, f2, f3]``: ``f0`` is kept whole; ``f1`` is judged
against ``f0``, ``f2`` against ``f0`` and ``f3`` against the *unpruned* ``f2``. Similarity is the
cosine between tokens at the same patch position, and a judged frame keeps its
``frame_token_budget(N, 1 - merge_ratio)`` least similar tokens. For another window size the same
pattern generalises: a frame at an even offset is judged against ``f0``, one at an odd offset
against the unpruned frame just before it.

Differences from the authors' released code, on purpose:
- every window is processed, the last one included (their code leaves the last window's third frame
  whole);
- a trailing partial window is processed with the frames it has, and no frame is ever dropped
  (their code drops the last frame when T is odd);
- kept tokens are returned in (frame, patch) order, unchanged, with their indices (their code
  returns them in similarity order, which loses the positions a host model needs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .budget import frame_token_budget

__all__ = ["TTMResult", "dycoke_ttm", "ttm_reference_frames"]


@dataclass(frozen=True)
class TTMResult:
    """Kept tokens of a clip.

    Attributes:
        tokens: ``(M, D)`` the kept tokens, values unchanged.
        index: ``(M, 2)`` long, ``(frame, patch)`` of each kept token, sorted by frame then patch.
    """

    tokens: torch.Tensor
    index: torch.Tensor


def ttm_reference_frames(num_frames: int, window: int = 4) -> list[int | None]:
    """For each frame, the frame it is judged against (``None`` for a window's first frame)."""
    refs: list[int | None] = []
    for t in range(num_frames):
        offset = t % window
        if offset == 0:
            refs.append(None)
        elif offset % 2 == 0:
            refs.append(t - offset)
        else:
            refs.append(t - 1)
    return refs


def dycoke_ttm(tokens: torch.Tensor, merge_ratio: float = 0.7, window: int = 4) -> TTMResult:
    """Prune temporally repeated tokens of a clip the DyCoke way.

    Args:
        tokens: ``(T, N, D)`` visual tokens, ``N`` patches per frame.
        merge_ratio: fraction ``K`` of a judged frame's tokens that is pruned.
        window: frames per window (the paper uses 4).

    Returns:
        :class:`TTMResult` with ``M = ttm_retained_count(T, N, merge_ratio, window)`` tokens.
    """
    if tokens.dim() != 3:
        raise ValueError(f"tokens must be (T, N, D), got shape {tuple(tokens.shape)}")
    T, N, _ = tokens.shape
    keep = torch.ones(T, N, dtype=torch.bool, device=tokens.device)
    refs = ttm_reference_frames(T, window)
    judged = [t for t, r in enumerate(refs) if r is not None]
    k = frame_token_budget(N, 1.0 - merge_ratio)
    if judged and k < N:
        cur = torch.tensor(judged, device=tokens.device)
        ref = torch.tensor([refs[t] for t in judged], device=tokens.device)
        sim = F.cosine_similarity(tokens[cur].float(), tokens[ref].float(), dim=-1)  # (J, N)
        keep[cur] = False
        if k > 0:
            least_similar = sim.topk(k, dim=-1, largest=False).indices  # (J, k)
            rows = keep[cur]
            rows.scatter_(1, least_similar, True)
            keep[cur] = rows
    index = keep.nonzero()  # (M, 2), row-major: sorted by frame then patch
    return TTMResult(tokens=tokens[index[:, 0], index[:, 1]], index=index)
