"""LLaVA-OneVision (and LLaVA-Video checkpoints, which use the same class).

A video is ``F * N`` pooled frame tokens (``N = 14 * 14`` at 384 px after 2x2 bilinear pooling)
followed by one ``image_newline`` token; the newline is always kept. The LLM uses 1-D RoPE.
Position choice (``PatchConfig.positions_1d``): ``"original"`` (default) keeps each kept token's
position in the unpruned sequence, leaving gaps where tokens were pruned, so the question after the
video sits at the same distance from every frame as without compression; ``"contiguous"``
renumbers the kept tokens 0..L'-1 as DyCoke's code does.
"""

from __future__ import annotations

from typing import Any

import torch

from ..encoders.llava import video_grid
from .core import VideoTokens, kept_inputs_1d, positions_from_mask, register_host

__all__ = ["LlavaOnevisionHost"]

_VIDEO_KEYS = ("pixel_values_videos", "vision_feature_layer", "vision_feature_select_strategy")


class LlavaOnevisionHost:
    def video_token_id(self, model: Any) -> int:
        return int(model.config.video_token_id)

    def video_extra_tokens(self, model: Any) -> int:
        return 1  # image_newline

    def video_tokens(self, model: Any, kwargs: dict) -> list[VideoTokens]:
        cfg = model.config
        pv = kwargs["pixel_values_videos"]  # (V, F, C, H, W)
        out = model.model.get_video_features(
            pv,
            vision_feature_layer=kwargs.get("vision_feature_layer", cfg.vision_feature_layer),
            vision_feature_select_strategy=kwargs.get("vision_feature_select_strategy", cfg.vision_feature_select_strategy),
        ).pooler_output  # (V, F*N + 1, D)
        grid = video_grid(cfg)
        frames = pv.shape[1]
        return [
            VideoTokens(out[v, :-1].reshape(frames, grid[0] * grid[1], -1), grid, out[v, -1:]) for v in range(out.shape[0])
        ]

    def full_positions(self, model: Any, kwargs: dict) -> torch.Tensor:
        return positions_from_mask(kwargs["attention_mask"]).unsqueeze(0)  # (1, B, L)

    def kept_inputs(
        self, model: Any, kwargs: dict, keep: torch.Tensor, positions: torch.Tensor, kept: list[torch.Tensor]
    ) -> dict:
        # (1, M, D): the model flattens it and scatters the tokens in placeholder order
        return kept_inputs_1d(model, kwargs, keep, positions, _VIDEO_KEYS, torch.cat(kept).unsqueeze(0))

    def virtual_video(self, model: Any, frames: int, grid: tuple[int, int]) -> tuple[dict, torch.Tensor | None]:
        expect = video_grid(model.config)
        if tuple(grid) != expect:
            raise ValueError(f"segments have a {grid} grid; this model's video frames are {expect[0]}x{expect[1]} tokens")
        return {}, model.model.image_newline.detach().unsqueeze(0)


register_host("LlavaOnevisionForConditionalGeneration", LlavaOnevisionHost())
