"""LLaVA-OneVision's video tokens: SigLIP vision tower + projector + 2x2 bilinear pooling.

With weights (a local path, or a hub id already in the local Hugging Face cache) this produces the
exact tokens the LLM sees for each video frame: 196 per frame at 384 px. Without weights it builds
the same classes from a tiny random config and warns loudly: the tokens then only exercise the
pipeline, they mean nothing.
"""

from __future__ import annotations

import logging
import sys
import warnings

import numpy as np
import torch

from .preprocess import to_pixel_values

__all__ = ["DEFAULT_MODEL", "DEFAULT_REVISION", "LlavaOnevisionEncoder", "llava_onevision_config", "load_llava_onevision",
           "tiny_llava_onevision_config", "video_grid"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
# The hub commit DEFAULT_MODEL is pinned to (as pinned by a public evaluation harness that checks its files'
# SHA-256; not checked against the hub from here, which has no network).
DEFAULT_REVISION = "74dd0bf867a4cda7950c17663794267c60cf4b40"


def tiny_llava_onevision_config():
    """A small LLaVA-OneVision config with random weights: 64 px frames, 4x4 = 16 tokens of D=128."""
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, image_size=64, patch_size=8, vision_use_head=False,
        ),
        text_config=dict(
            model_type="qwen2", vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        ),
        image_token_index=998, video_token_index=999, vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )


def _tiny_reason(model: str | None, exc: Exception | None) -> str:
    reason = f"no local weights for {model!r} ({type(exc).__name__})" if model else "no model given"
    return (f"StreamDyCoke: {reason}; using a TINY RANDOM LLaVA-OneVision config. "
            "Its tokens are meaningless; pass a local checkpoint for real ones.")


def llava_onevision_config(model: str | None = DEFAULT_MODEL, revision: str | None = None):
    """The checkpoint's ``LlavaOnevisionConfig`` (local files only; a hub id at ``revision``), or the tiny
    one when there is none.

    Cheap: reads a JSON file; no weights are loaded."""
    from transformers import LlavaOnevisionConfig

    if model:
        try:
            return LlavaOnevisionConfig.from_pretrained(model, revision=revision, local_files_only=True)
        except (OSError, ValueError):
            pass
    return tiny_llava_onevision_config()


def video_grid(cfg) -> tuple[int, int]:
    """``(H, W)`` video tokens per frame: the vision tower's patch grid after LLaVA-OneVision's 2x2 pooling."""
    side = cfg.vision_config.image_size // cfg.vision_config.patch_size
    pooled = -(-side // 2)
    return (pooled, pooled)


def load_llava_onevision(model: str | None = DEFAULT_MODEL, dtype: torch.dtype = torch.float32,
                         revision: str | None = None):
    """Load ``LlavaOnevisionForConditionalGeneration`` from local weights (a hub id: the cached snapshot of
    ``revision``, a commit), or a tiny random one.

    The tiny model's weights come from a fixed seed, drawn without touching the caller's random
    state, so every process (camera actors, LLM replicas) builds the same one.
    Returns ``(model, pretrained: bool)``.
    """
    from transformers import LlavaOnevisionForConditionalGeneration

    exc: Exception | None = None
    if model:
        try:
            m = LlavaOnevisionForConditionalGeneration.from_pretrained(model, dtype=dtype, revision=revision,
                                                                       local_files_only=True)
            return m.eval(), True
        except (OSError, ValueError) as e:
            exc = e
    msg = _tiny_reason(model if revision is None else f"{model}@{revision}", exc)
    warnings.warn(msg, stacklevel=2)
    print(f"WARNING: {msg}", file=sys.stderr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = LlavaOnevisionForConditionalGeneration(tiny_llava_onevision_config()).to(dtype)
    return m.eval(), False


class LlavaOnevisionEncoder:
    """Frames -> LLaVA-OneVision video tokens ``(B, N, D)`` (``N = 14*14``, ``D`` = LLM width, with weights).

    Args:
        model: local path or cached hub id; ``None`` forces the tiny random config.
        dtype: compute dtype of the vision tower.
        device: where it runs (tokens come back on the CPU).
        revision: the hub commit of ``model`` (ignored for a local path).
    """

    name = "llava-onevision"

    def __init__(self, model: str | None = DEFAULT_MODEL, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", revision: str | None = None) -> None:
        self.model, self.pretrained = load_llava_onevision(model, dtype, revision)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.dtype = dtype
        cfg = self.model.config
        self.grid = video_grid(cfg)
        self.dim = cfg.text_config.hidden_size
        side = cfg.vision_config.image_size
        self.input_size = (side, side)
        # SigLIP normalisation (LLaVA-OneVision's processor uses mean = std = 0.5).
        self._mean = (0.5, 0.5, 0.5)
        self._std = (0.5, 0.5, 0.5)
        self._diff = None  # the differential tower (encode_differential), built on first use
        self.last_stats = None

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, N, D)`` float32 (the newline token is not included)."""
        pv = to_pixel_values(frames, self.input_size, self._mean, self._std).to(self.device, self.dtype)
        cfg = self.model.config
        out = self.model.model.get_video_features(
            pv.unsqueeze(0),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        )
        feats = out.pooler_output[0, :-1]  # drop the trailing image_newline: (B*N, D)
        return feats.view(pv.shape[0], self.grid[0] * self.grid[1], -1).float().cpu()

    def new_state(self):
        """An empty :class:`~streamdycoke.encoders.differential.TowerState` for one stream."""
        from .differential import TowerState

        return TowerState()

    @torch.no_grad()
    def encode_differential(self, frames: np.ndarray, states: list, config) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8, one frame of each of B streams with that stream's
        :class:`~streamdycoke.encoders.differential.TowerState` -> ``(B, N, D)`` float32, recomputing only
        the patches that changed (:mod:`streamdycoke.encoders.differential`; ``config.threshold`` 0: exactly
        :meth:`encode`). The states are updated in place; ``self.last_stats`` says what was computed."""
        from .differential import SiglipDifferential

        cfg = self.model.config
        if cfg.vision_feature_select_strategy != "full" or not isinstance(cfg.vision_feature_layer, int):
            raise ValueError("differential encoding needs vision_feature_select_strategy 'full' and one feature layer")
        if self._diff is None:
            inner = self.model.model
            self._diff = SiglipDifferential(inner.vision_tower, cfg.vision_feature_layer, inner.multi_modal_projector)
        pv = to_pixel_values(frames, self.input_size, self._mean, self._std).to(self.device, self.dtype)
        per_patch, self.last_stats = self._diff.encode(pv, states, config)
        feats = self.model.model.apply_pooling(per_patch)  # (B, N, D)
        return feats.float().cpu()
