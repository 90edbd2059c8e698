"""VideoLLaMA3 (``VideoLlama3ForConditionalGeneration``, transformers >= 5).

A video of ``video_grid_thw = (t, h, w)`` patches with spatial merge ``m`` (``video_merge_sizes``)
is ``t * (h/m) * (w/m)`` tokens in (t, h, w) order. VideoLLaMA3's processor may already drop
tokens that repeat the previous frame (``video_compression_mask``, with no placeholder for them);
StreamDyCoke's selection runs on the full grid and is intersected with that mask, so the two
compose. The LLM uses 1-D positions; ``PatchConfig.positions_1d`` applies as for LLaVA-OneVision.
"""

from __future__ import annotations

from typing import Any

import torch
from .core import VideoTokens, kept_inputs_1d, positions_from_mask, register_host

__all__ = ["VideoLlama3Host"]

_VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "video_merge_sizes", "video_compression_mask")


class VideoLlama3Host:
    def video_token_id(self, model: Any) -> int:
        return int(model.config.video_token_id)

    def video_extra_tokens(self, model: Any) -> int:
        return 0

    def video_tokens(self, model: Any, kwargs: dict) -> list[VideoTokens]:
        grid, merge = kwargs["video_grid_thw"], kwargs["video_merge_sizes"]
        out = model.model.get_video_features(kwargs["pixel_values_videos"], grid, merge).pooler_output
        masks: list[torch.Tensor | None] = [None] * len(out)
        if kwargs.get("video_compression_mask") is not None:
            masks = list(torch.split(kwargs["video_compression_mask"].bool(), [f.shape[0] for f in out]))
        vids = []
        for feats, (t, h, w), m, present in zip(out, grid.tolist(), merge.tolist(), masks):
            hh, ww = h // m, w // m
            vids.append(VideoTokens(feats.reshape(t, hh * ww, -1), (hh, ww),
                                    present=None if present is None else present.reshape(t, hh * ww)))
        return vids

    def full_positions(self, model: Any, kwargs: dict) -> torch.Tensor:
        return positions_from_mask(kwargs["attention_mask"]).unsqueeze(0)  # (1, B, L)

    def kept_inputs(
        self, model: Any, kwargs: dict, keep: torch.Tensor, positions: torch.Tensor, kept: list[torch.Tensor]
    ) -> dict:
        return kept_inputs_1d(model, kwargs, keep, positions, _VIDEO_KEYS, tuple(kept))

    def virtual_video(self, model: Any, frames: int, grid: tuple[int, int]) -> tuple[dict, torch.Tensor | None]:
        return {}, None


register_host("VideoLlama3ForConditionalGeneration", VideoLlama3Host())
