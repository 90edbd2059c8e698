"""Cached segments as LLM input: the path a live camera's question takes.

:func:`inputs_from_segments` turns a window of stored :class:`~streamdycoke.segment.TokenSegment`s
and a question into ``inputs_embeds``, ``attention_mask`` and ``position_ids`` for the host LLM,
without running the vision tower: the tokens were encoded (and compressed) when the frames came in.

Positions: the window is laid out as the unpruned video the model would have seen, one temporal
step per stored frame in frame order, ``prefix + video placeholders + suffix``; the model's own
position rule (``get_rope_index`` for Qwen's M-RoPE, 1-D positions for LLaVA) gives every slot its
position, and each stored token takes the position of its (frame, patch) slot. Frames the sampler
skipped are not in the window, so they take no temporal step. The window is read as
:mod:`streamdycoke.reading` says: the kept tokens of older frames, then the live frame whole as the
newest step (or, without one, the held now frame one temporal step after the newest frame); its tokens
count in ``visual_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..budget import window_visual_tokens
from ..reading import reading
from ..segment import TokenSegment
from .core import host_for

__all__ = ["SegmentInputs", "generate_from_segments", "inputs_from_segments"]


@dataclass
class SegmentInputs:
    """LLM inputs built from segments.

    Attributes:
        inputs_embeds: ``(1, L, D)`` in the model's dtype.
        attention_mask: ``(1, L)``.
        position_ids: ``(4, 1, L)`` for Qwen (text row + t, h, w) or ``(1, L)`` for LLaVA.
        visual_tokens: video tokens in the input (kept tokens plus always-kept extras).
        visual_tokens_uncompressed: what the same window costs uncompressed.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    visual_tokens: int
    visual_tokens_uncompressed: int


@torch.no_grad()
def inputs_from_segments(
    model: Any, segments: list[TokenSegment], prefix_ids: torch.Tensor, suffix_ids: torch.Tensor, *, now: bool = True
) -> SegmentInputs:
    """Build LLM inputs for ``prefix + video(segments, now frame) + suffix``.

    Args:
        model: a supported host model (patched or not).
        segments: one stream's segments in frame order (e.g. ``TokenStore.read`` of a time window).
        prefix_ids: ``(P,)`` token ids before the video (chat template, system prompt).
        suffix_ids: ``(S,)`` token ids after it (the question, the assistant prefix).
        now: append the now frame (:func:`streamdycoke.reading.reading`); False gives the stored
            segments alone (a comparison).
    """
    if not segments:
        raise ValueError("no segments: the window holds no frames")
    if now:
        segments = reading(segments)
    stored = len({s.frame_index for s in segments})  # frames of the window (a restated now frame shares one)
    grid = segments[0].grid
    dim = segments[0].dim
    for s in segments:
        if s.grid != grid or s.dim != dim:
            raise ValueError(f"frame {s.frame_index}: grid/dim {s.grid}/{s.dim} differ from {grid}/{dim} in one window")
    hidden = model.get_input_embeddings().weight.shape[1]
    if dim != hidden:
        raise ValueError(f"segment tokens have D={dim}; the model's embeddings have {hidden}")
    host = host_for(model)
    F, N = len(segments), grid[0] * grid[1]
    video_kwargs, extra = host.virtual_video(model, F, grid)
    n_extra = 0 if extra is None else extra.shape[0]
    video_id = host.video_token_id(model)
    prefix_ids, suffix_ids = prefix_ids.reshape(-1).long(), suffix_ids.reshape(-1).long()
    n_video = F * N + n_extra
    ids = torch.cat([prefix_ids, torch.full((n_video,), video_id, dtype=torch.long), suffix_ids]).unsqueeze(0)
    mask = torch.ones_like(ids)
    full = host.full_positions(
        model, {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": (ids == video_id).int() * 2, **video_kwargs}
    )  # (R, 1, L_full)
    # keep: the (frame, patch) slots the segments hold, plus the extras
    P = prefix_ids.shape[0]
    keep = torch.ones(ids.shape[1], dtype=torch.bool)
    keep[P:P + F * N] = False
    slots = torch.cat([f * N + s.positions for f, s in enumerate(segments)]) + P
    keep[slots] = True
    emb = model.get_input_embeddings()
    dtype = emb.weight.dtype
    video = torch.cat([s.tokens for s in segments]).to(dtype)
    parts = [emb(prefix_ids), video] + ([extra.to(dtype)] if extra is not None else []) + [emb(suffix_ids)]
    embeds = torch.cat(parts).unsqueeze(0)
    pos = full[:, :, keep]
    L = embeds.shape[1]
    if pos.shape[0] == 3:  # M-RoPE: prepend the text-position row generate() expects
        position_ids = torch.cat([torch.arange(L).view(1, 1, L), pos], dim=0)
    else:
        position_ids = pos[0]
    return SegmentInputs(
        inputs_embeds=embeds, attention_mask=torch.ones(1, L, dtype=torch.long), position_ids=position_ids,
        visual_tokens=window_visual_tokens((s.num_kept for s in segments), n_extra),
        visual_tokens_uncompressed=window_visual_tokens([stored * N], n_extra),
    )


def generate_from_segments(
    model: Any, segments: list[TokenSegment], prefix_ids: torch.Tensor, suffix_ids: torch.Tensor, *, now: bool = True,
    **generate_kwargs: Any
) -> tuple[torch.Tensor, SegmentInputs]:
    """Answer from cached segments: ``(new token ids (1, n), the inputs used)``; ``now`` as in
    :func:`inputs_from_segments`."""
    inp = inputs_from_segments(model, segments, prefix_ids, suffix_ids, now=now)
    out = model.generate(
        inputs_embeds=inp.inputs_embeds, attention_mask=inp.attention_mask, position_ids=inp.position_ids,
        **generate_kwargs,
    )
    return out, inp
