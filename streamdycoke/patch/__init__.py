"""Plug-and-play compression for Hugging Face video LLMs: ``apply_patch(model, config)``.

Like ToMe's ``apply_patch``, this patches one model *instance*: its class is swapped for a subclass
made for it, so other instances of the same class are untouched. One file per host family:
``llava_onevision.py`` (LLaVA-OneVision, which also serves LLaVA-Video checkpoints) and
``qwen2_vl.py`` (Qwen2-VL and Qwen2.5-VL). A new model opts in by implementing the small
:class:`SupportsVideoTokenPruning` protocol and registering it (see :func:`register_host`).
"""

from .core import PatchConfig, SupportsVideoTokenPruning, VideoTokens, apply_patch, register_host, select_tokens

__all__ = ["PatchConfig", "SupportsVideoTokenPruning", "VideoTokens", "apply_patch", "register_host", "select_tokens"]
