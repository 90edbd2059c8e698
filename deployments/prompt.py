"""The text around a window of video: the LLM's prompt before and after the visual tokens, and its words.

:class:`VideoPrompt` renders one user turn, the video then the question, and the assistant's turn to
answer. With a tokenizer that has a chat template, the template renders it (transformers'
``apply_chat_template``, around a placeholder where the video goes, split there); with a tokenizer and no
template, LLaVA-OneVision's own turns (Qwen2's ``<|im_start|>``); without a tokenizer (the tiny random
model offline) each word is hashed, stably, into the vocabulary. The text before the video depends on
nothing in the request, so a kept KV cache of it serves every question (incremental prefill).
"""

from __future__ import annotations

import zlib
from typing import Any

import torch

__all__ = ["VideoPrompt"]

# where the video goes in the rendered template: text no template writes and no question can hold
_VIDEO = "\x00streamdycoke-video\x00"
_QWEN2_TURNS = ("<|im_start|>user\n", "\n{question}<|im_end|>\n<|im_start|>assistant\n")


class VideoPrompt:
    """The prompt's token ids and the answer's text for one LLM.

    Args:
        tokenizer: the model's (transformers), or None for the tiny random model (no words exist).
        vocab: the model's vocabulary size (the hashed words' range without a tokenizer).
    """

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        self.tokenizer, self.vocab = tokenizer, vocab
        self.templated = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))

    def ids(self, text: str) -> torch.Tensor:
        """``(n,)`` token ids of ``text`` (no special tokens added: the template wrote its own)."""
        if self.tokenizer is not None:
            return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        return torch.tensor([10 + zlib.crc32(w.encode()) % (self.vocab - 20) for w in text.split()] or [10])

    def texts(self, question: str) -> tuple[str, str]:
        """The prompt's text before and after the video."""
        if self.templated:
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": f"{_VIDEO}\n{question}"}], tokenize=False, add_generation_prompt=True)
            before, sep, after = rendered.partition(_VIDEO)
            if not sep:
                raise ValueError("the tokenizer's chat template dropped the user's message")
            return before, after
        if self.tokenizer is not None:
            return _QWEN2_TURNS[0], _QWEN2_TURNS[1].format(question=question)
        return "user:", f"{question} assistant:"

    def around_video(self, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``((p,), (s,))`` token ids before and after the video for ``question``."""
        before, after = self.texts(question)
        return self.ids(before), self.ids(after)

    def text(self, ids: list[int]) -> str:
        """The answer's text (special tokens dropped); the tiny model's ids as ``<id>``."""
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        return " ".join(f"<{i}>" for i in ids)
