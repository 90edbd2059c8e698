"""A model-free encoder for quick analysis: each token is a patch's downscaled pixels."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import check_frames

__all__ = ["PixelEncoder"]


class PixelEncoder:
    """Tokens from patch statistics, no model.

    The frame is area-downscaled to ``(grid * cell)`` pixels a side; each of the ``grid x grid``
    patches becomes one token: its ``cell x cell`` RGB values centred on mid-grey, plus a constant
    component so flat patches of the same grey compare as equal. ``D = 3 * cell**2 + 1``.
    """

    name = "pixels"

    def __init__(self, grid: int = 14, cell: int = 4, input_size: int = 224) -> None:
        self.grid = (grid, grid)
        self.cell = cell
        self.dim = 3 * cell * cell + 1
        self.input_size = (input_size, input_size)

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, grid*grid, 3*cell*cell + 1)`` float32."""
        frames = check_frames(frames)
        g, c = self.grid[0], self.cell
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # (B, 3, H, W)
        x = F.adaptive_avg_pool2d(x, g * c)  # (B, 3, g*c, g*c)
        b = x.shape[0]
        x = x.view(b, 3, g, c, g, c).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, 3 * c * c)
        bias = torch.full((b, g * g, 1), 0.25)
        return torch.cat([x, bias], dim=-1)
