"""Qwen2-VL and Qwen2.5-VL.

A video of ``video_grid_thw = (t, h, w)`` patches is ``t * (h/m) * (w/m)`` tokens after the
``m x m`` spatial merge, in (t, h, w) order, each with a 3-D M-RoPE position (temporal, height,
width). The positions of the *unpruned* sequence come from the model's own ``get_rope_index``;
kept tokens keep theirs, and the text after the video keeps the position it had, so decoding
continues exactly where the unpruned model would (``generate`` advances every row by one).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .core import VideoTokens, pad_token_id, register_host, shrink

__all__ = ["Qwen2VLHost"]

_VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


class Qwen2VLHost:
    def video_token_id(self, model: Any) -> int:
        return int(model.config.video_token_id)

    def video_extra_tokens(self, model: Any) -> int:
        return 0

    def video_tokens(self, model: Any, kwargs: dict) -> list[VideoTokens]:
        grid = kwargs["video_grid_thw"]
        out = model.model.get_video_features(kwargs["pixel_values_videos"], grid).pooler_output  # tuple of (t*h'*w', D)
        m = model.config.vision_config.spatial_merge_size
        vids = []
        for feats, (t, h, w) in zip(out, grid.tolist()):
            vids.append(VideoTokens(feats.reshape(t, (h // m) * (w // m), -1), (h // m, w // m)))
        return vids

    def full_positions(self, model: Any, kwargs: dict) -> torch.Tensor:
        fn = model.model.get_rope_index
        accepted = set(inspect.signature(fn).parameters)
        extra = {k: v for k, v in kwargs.items() if k in accepted and k not in ("input_ids", "kwargs")}
        positions, _ = fn(kwargs["input_ids"], **extra)
        return positions  # (3, B, L)

    def kept_inputs(
        self, model: Any, kwargs: dict, keep: torch.Tensor, positions: torch.Tensor, kept: list[torch.Tensor]
    ) -> dict:
        pad = pad_token_id(model)
        tensors = {"input_ids": kwargs["input_ids"], "attention_mask": kwargs["attention_mask"]}
        if kwargs.get("mm_token_type_ids") is not None:
            tensors["mm_token_type_ids"] = kwargs["mm_token_type_ids"]
        tensors, pos = shrink(keep, tensors, positions, {"input_ids": pad, "attention_mask": 0, "mm_token_type_ids": 0})
        mask = tensors["attention_mask"]
        text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
        new = {k: v for k, v in kwargs.items() if k not in _VIDEO_KEYS}
        new.update(tensors)
        new["position_ids"] = torch.cat([text.unsqueeze(0), pos], dim=0)  # (4, B, L'): text row + (t, h, w)
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        new["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=tuple(kept))}
        return new


    def virtual_video(self, model: Any, frames: int, grid: tuple[int, int]) -> tuple[dict, torch.Tensor | None]:
        m = model.config.vision_config.spatial_merge_size
        return {"video_grid_thw": torch.tensor([[frames, grid[0] * m, grid[1] * m]])}, None


register_host("Qwen2VLForConditionalGeneration", Qwen2VLHost())
register_host("Qwen2_5_VLForConditionalGeneration", Qwen2VLHost())
