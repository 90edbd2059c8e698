"""The LLM side, as a plain class: answer questions from cached segments, batched, with timings.

:class:`LLMEngine` loads the configured video LLM (LLaVA-OneVision through transformers: pretrained
when local weights exist, else a tiny random config with a loud warning) and answers a batch of
questions, each over its own window of :class:`~streamdycoke.TokenSegment`s, without running the
vision tower: inputs come from :func:`streamdycoke.patch.segments.inputs_from_segments` (each token
at its original position), rows are left-padded into one batch, prefill and greedy decoding are
timed separately.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import torch

from streamdycoke.budget import window_visual_tokens
from streamdycoke.encoders import EncoderSpec
from streamdycoke.encoders.llava import load_llava_onevision
from streamdycoke.patch.core import _host_for
from streamdycoke.patch.segments import inputs_from_segments
from streamdycoke.segment import TokenSegment, decode_segment, read_header

__all__ = ["LLMEngine", "LLMRequest", "LLMResult"]


@dataclass
class LLMRequest:
    camera: str
    question: str
    max_new_tokens: int
    segments: list[bytes]  # wire-format segments (decoded with checks, never unpickled)
    enqueued_at: float = field(default_factory=time.time)  # wall clock: it crosses processes
    num_tokens: int = 0  # visual tokens it brings to a batch: set by the LLM replica (LLMEngine.visual_tokens)


@dataclass
class LLMResult:
    answer: str
    new_tokens: int
    visual_tokens: int
    visual_tokens_uncompressed: int
    queue_ms: float
    prefill_ms: float
    decode_ms: float
    batch_size: int


class LLMEngine:
    """The video LLM ``spec`` names, answering from cached segments.

    Args:
        spec: the model (weights, dtype, device); its vision tower is what the cameras encode with.
    """

    def __init__(self, spec: EncoderSpec | None = None) -> None:
        spec = spec or EncoderSpec()
        self.device = spec.torch_device()
        self.model, self.pretrained = load_llava_onevision(spec.weights, spec.torch_dtype())
        self.model.to(self.device)
        self.tokenizer = None
        if self.pretrained:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(spec.weights, local_files_only=True)
        self.vocab = self.model.config.text_config.vocab_size
        self.extra_tokens = _host_for(self.model).video_extra_tokens(self.model)  # always-kept tokens per video

    def visual_tokens(self, segments: list[bytes]) -> int:
        """Visual tokens a window of wire-format segments costs this LLM (what the answer reports)."""
        return window_visual_tokens((read_header(b).num_kept for b in segments), self.extra_tokens)

    # -- text --------------------------------------------------------------------------------------
    def _ids(self, text: str) -> torch.Tensor:
        if self.tokenizer is not None:
            return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        # offline tiny model: a stable hash of each word into the vocabulary (no tokenizer exists)
        return torch.tensor([10 + zlib.crc32(w.encode()) % (self.vocab - 20) for w in text.split()] or [10])

    def prompt_ids(self, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids before and after the video (LLaVA-OneVision's chat template with weights)."""
        if self.tokenizer is not None:
            return (self._ids("<|im_start|>user\n"),
                    self._ids(f"\n{question}<|im_end|>\n<|im_start|>assistant\n"))
        return self._ids("user:"), self._ids(f"{question} assistant:")

    def _text(self, ids: list[int]) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        return " ".join(f"<{i}>" for i in ids)  # the tiny random model has no words

    # -- answering ---------------------------------------------------------------------------------
    @torch.no_grad()
    def answer(self, requests: list[LLMRequest]) -> list[LLMResult]:
        start = time.time()
        inputs = []
        for r in requests:
            segs: list[TokenSegment] = [decode_segment(b) for b in r.segments]
            pre, suf = self.prompt_ids(r.question)
            inputs.append(inputs_from_segments(self.model, segs, pre, suf))
        B = len(inputs)
        L = max(x.inputs_embeds.shape[1] for x in inputs)
        D = inputs[0].inputs_embeds.shape[2]
        dtype = inputs[0].inputs_embeds.dtype
        embeds = torch.zeros(B, L, D, dtype=dtype)
        mask = torch.zeros(B, L, dtype=torch.long)
        pos = torch.ones(B, L, dtype=torch.long)
        for b, x in enumerate(inputs):  # left padding
            n = x.inputs_embeds.shape[1]
            embeds[b, L - n:] = x.inputs_embeds[0]
            mask[b, L - n:] = 1
            pos[b, L - n:] = x.position_ids[0]
        embeds, mask, pos = embeds.to(self.device), mask.to(self.device), pos.to(self.device)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config.get_text_config())
        t0 = time.perf_counter()
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
        t_prefill = time.perf_counter() - t0
        steps = max(r.max_new_tokens for r in requests)
        tok = out.logits[:, -1].argmax(-1)
        generated = [tok]
        t0 = time.perf_counter()
        for _ in range(steps - 1):
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=mask.device)], 1)
            pos = pos[:, -1:] + 1
            out = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
            tok = out.logits[:, -1].argmax(-1)
            generated.append(tok)
        t_decode = time.perf_counter() - t0
        ids = torch.stack(generated, 1).tolist()
        results = []
        for b, (r, x) in enumerate(zip(requests, inputs)):
            mine = ids[b][: r.max_new_tokens]
            results.append(LLMResult(
                answer=self._text(mine), new_tokens=len(mine), visual_tokens=x.visual_tokens,
                visual_tokens_uncompressed=x.visual_tokens_uncompressed,
                queue_ms=1e3 * (start - r.enqueued_at), prefill_ms=1e3 * t_prefill, decode_ms=1e3 * t_decode,
                batch_size=B,
            ))
        return results
