"""The language models of LLaVA-OneVision 0.5B and 7B as shapes (Qwen2-0.5B and Qwen2-7B), for the
benchmarks that time prefill and decode with random weights: compute does not depend on weight values.
One owner for ``bench prefill``, ``bench gpu`` and ``bench standing``."""

from __future__ import annotations

__all__ = ["LM_SHAPES", "lm_config"]

LM_SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000),  # smoke tests only
}


def lm_config(shape: str):
    """A ``transformers.Qwen2Config`` of ``shape`` (a key of :data:`LM_SHAPES`), RoPE θ 1e6 as Qwen2."""
    from transformers import Qwen2Config

    return Qwen2Config(**LM_SHAPES[shape], max_position_embeddings=32768,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6})
