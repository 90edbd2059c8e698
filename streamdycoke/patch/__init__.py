"""Plug-and-play compression for Hugging Face video LLMs: ``apply_patch(model, config)``.

Like ToMe's ``apply_patch``, this patches one model *instance*: its class is swapped for a subclass
made for it, so other instances of the same class are untouched. One file per host family:
``llava_onevision.py`` (LLaVA-OneVision, which also serves LLaVA-Video checkpoints) and
``qwen2_vl.py`` (Qwen2-VL and Qwen2.5-VL). A new model opts in by implementing the small
:class:`SupportsVideoTokenPruning` protocol and registering it (see :func:`register_host`).
"""

from .core import PatchConfig, SupportsVideoTokenPruning, VideoTokens, apply_patch, host_for, register_host, select_tokens
from . import llava_onevision, qwen2_vl, video_llama3  # noqa: E402,F401  (the built-in hosts register themselves)

__all__ = ["PatchConfig", "SupportsVideoTokenPruning", "VideoTokens", "apply_patch", "host_for", "register_host", "select_tokens"]
