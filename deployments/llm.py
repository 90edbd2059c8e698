"""The LLM side, as a plain class: answer questions from cached segments, batched, with timings.

:class:`LLMEngine` loads the configured video LLM (LLaVA-OneVision through transformers: pretrained
when local weights exist, else a tiny random config with a loud warning) and answers a batch of
questions, each over its own window of :class:`~streamdycoke.TokenSegment`s, without running the
vision tower: inputs come from :func:`streamdycoke.patch.segments.inputs_from_segments` (each token
at its original position, the position it has in the unpruned stream).

Generation is transformers' own ``generate`` (stopping on the model's end-of-sequence tokens,
greedy or sampled by :class:`GenerationOptions`, a streamer that times prefill and decoding and, for
:meth:`LLMEngine.stream`, hands each token over as it comes). Requests that share generation options
are left-padded into one batch; so are requests that reuse kept caches (below), over padded copies.

**Incremental prefill.** A request with a ``reuse_key`` (a standing query's window of one camera)
is answered from a KV cache the engine keeps under that key: the cache holds the prompt prefix and
the visual tokens of the segments already prefilled, and only the segments added since are
prefilled; the question and the answer are appended, answered, then cropped off again. The cached
segments must be the request's first segments (same frame, kept count, capture time and checksum):
the window may only grow at its newest end. When its start moves (the caller's anchor slid) or
anything else differs, the cache is rebuilt from the request's window: every cached key was computed
attending to the tokens before it, so dropping the oldest tokens out of a cache would change what
the rest mean. With reuse and without, a request's tokens, positions and attention are the same,
so are the answers (tested).

Size: over 300 lines by its docstrings; the engine's batching and its per-camera prefix cache share the
model's forward passes (prompt building is :mod:`deployments.prompt`); its code is under 300.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from actors.llm_request import GenerationOptions, LLMRequest
from streamdycoke.budget import window_visual_tokens
from streamdycoke.encoders import EncoderSpec
from streamdycoke.encoders.llava import load_llava_onevision
from streamdycoke.patch.core import host_for
from streamdycoke.patch.segments import SegmentInputs, inputs_from_segments
from streamdycoke.reading import reading
from streamdycoke.segment import read_header, decode_segment

from .prompt import VideoPrompt

__all__ = ["LLMEngine", "LLMResult"]


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
    prefilled_tokens: int = 0  # tokens this request prefilled (question and extras included)
    reused_tokens: int = 0  # tokens it took from a kept KV cache instead
    finish_reason: str = "length"  # "stop": the model ended its answer; "length": max_new_tokens reached
    prompt_tokens: int = 0  # the whole prompt the model read: the chat text's tokens and the visual tokens


@dataclass
class _KeptWindow:
    """A window's KV cache: the prompt prefix and the visual tokens of the segments ``segment_ids`` names."""

    segment_ids: list[tuple[int, int, float, int]]  # (frame index, kept tokens, capture time, CRC) per prefilled segment
    cache: object  # transformers DynamicCache
    length: int  # tokens in the cache


@dataclass
class _Extended:
    """A request's window brought up to date in its kept cache (:meth:`LLMEngine._extend`)."""

    inputs: SegmentInputs  # the request's whole prompt
    kept: _KeptWindow  # the cache, now holding the prompt prefix and the window's frames before its newest
    visual_end: int  # where the window's visual tokens end in the prompt (what the cache holds)
    reused: int  # tokens taken from the cache instead of prefilled
    prefill_s: float  # the seconds prefilling what the window added took


class _Clock:
    """A transformers streamer that notes when each step's tokens come out (prefill ends at the first)
    and, given ``on_token``, hands each new token id of row 0 over as it is generated."""

    def __init__(self, on_token=None) -> None:
        self.steps: list[float] = []
        self.on_token = on_token

    def put(self, value) -> None:
        self.steps.append(time.perf_counter())
        if self.on_token is not None and len(self.steps) > 1:  # put #0 is the prompt
            self.on_token(int(value.reshape(-1)[0]))

    def end(self) -> None:
        pass


class LLMEngine:
    """The video LLM ``spec`` names, answering from cached segments.

    Args:
        spec: the model (weights, dtype, device); its vision tower is what the cameras encode with.
        kept_windows: KV caches kept for incremental prefill (least recently used dropped first).
        model: a LLaVA-OneVision model already built (``spec`` then only gives the device); no tokenizer.
    """

    def __init__(self, spec: EncoderSpec | None = None, kept_windows: int = 16, model: Any = None) -> None:
        spec = spec or EncoderSpec()
        self.device = spec.torch_device()
        if model is not None:  # an already built model (a benchmark's real-size random one): no tokenizer
            self.model, self.pretrained = model.eval(), False
        else:
            self.model, self.pretrained = load_llava_onevision(spec.weights, spec.torch_dtype(), spec.revision)
        self.model.to(self.device)
        self.tokenizer = None
        if self.pretrained:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(spec.weights, revision=spec.revision, local_files_only=True)
        self.vocab = self.model.config.text_config.vocab_size
        self.prompt = VideoPrompt(self.tokenizer, self.vocab)
        self.extra_tokens = host_for(self.model).video_extra_tokens(self.model)  # always-kept tokens per video
        gen = self.model.generation_config
        eos = gen.eos_token_id if self.pretrained else None  # the tiny random model has no end of sequence
        self.eos: set[int] = set([eos] if isinstance(eos, int) else (eos or []))
        pad = getattr(self.tokenizer, "pad_token_id", None) if self.tokenizer is not None else None
        self.pad_id = pad if pad is not None else (min(self.eos) if self.eos else 0)
        self.kept_windows = kept_windows
        self.kept: OrderedDict[str, _KeptWindow] = OrderedDict()

    @staticmethod
    def segments(r: LLMRequest) -> list:
        """``r``'s window as :class:`~streamdycoke.TokenSegment`s, decoded (with every check) once per
        request on this replica and kept on it (``r.decoded``) for the answer."""
        if r.decoded is None:
            r.decoded = [decode_segment(b) for b in r.segments]
        return r.decoded

    def visual_tokens(self, r: LLMRequest) -> int:
        """Visual tokens ``r``'s window costs this LLM (what the answer reports): its kept tokens and its
        now frame (:mod:`streamdycoke.reading`: the live frame whole, the store appends it)."""
        return window_visual_tokens([s.num_kept for s in reading(self.segments(r))], self.extra_tokens)

    def forget(self, prefix: str) -> None:
        """Drop the kept KV caches whose key starts with ``prefix`` (e.g. a camera routed elsewhere)."""
        for key in [k for k in self.kept if k.startswith(prefix)]:
            del self.kept[key]

    # -- text --------------------------------------------------------------------------------------
    def prompt_ids(self, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids before and after the video (:class:`~deployments.prompt.VideoPrompt`: the model's chat
        template where its tokenizer has one)."""
        return self.prompt.around_video(question)

    def _text(self, ids: list[int]) -> str:
        return self.prompt.text(ids)

    # -- generation --------------------------------------------------------------------------------
    def _generate(self, embeds: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, steps: int,
                  opts: GenerationOptions, cache, on_token=None) -> tuple[list[list[int]], float, float]:
        """transformers' ``generate`` from ``(B, L, D)`` embeddings at explicit positions, continuing
        ``cache`` (whatever part of the input it already holds is not computed again).
        Returns each row's new token ids (cut after its end of sequence), and the times (s) to the first
        token and after it."""
        from transformers import GenerationConfig

        cfg = GenerationConfig(max_new_tokens=steps, min_new_tokens=0, do_sample=opts.sampled,
                               temperature=opts.temperature if opts.sampled else None,
                               top_p=opts.top_p if opts.sampled else None, top_k=None,
                               eos_token_id=sorted(self.eos) or None, pad_token_id=self.pad_id)
        clock = _Clock(on_token)
        t0 = time.perf_counter()
        if opts.seed is not None:
            torch.manual_seed(opts.seed)
        out = self.model.generate(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, cache=cache,
                                  generation_config=cfg, streamer=clock)
        t_end = time.perf_counter()
        first = clock.steps[1] if len(clock.steps) > 1 else t_end  # put #0 is the prompt, #1 the first token
        rows = []
        for row in out.tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in self.eos), len(row))
            rows.append(row[:cut])
        return rows, first - t0, t_end - first

    # -- answering ---------------------------------------------------------------------------------
    @torch.no_grad()
    def answer(self, requests: list[LLMRequest]) -> list[LLMResult]:
        """Answer every request, in batches of equal generation options: those with a ``reuse_key`` from
        their kept caches (each window's new segments prefilled on its own, then the questions and answers
        of the batch together), the others from scratch. Results come in the requests' order."""
        start = time.time()
        results: list[LLMResult | None] = [None] * len(requests)
        groups: dict[tuple[bool, GenerationOptions], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.reuse_key is not None, r.options), []).append(i)
        for (kept, opts), idx in groups.items():
            batch = [requests[i] for i in idx]
            answered = self._answer_kept_batch(batch, opts, start) if kept else self._answer_batch(batch, opts, start)
            for i, res in zip(idx, answered):
                results[i] = res
        return results  # type: ignore[return-value]

    def stream(self, r: LLMRequest):
        """Answer one request token by token: yields ``{"delta": text}`` as each token is generated (its
        text, or the text it adds), then ``{"result": LLMResult}``. transformers generates in a thread and
        hands each token over through its streamer; the request is answered alone (not batched)."""
        import queue
        import threading

        q: queue.Queue = queue.Queue()
        out: dict = {}

        def work() -> None:
            try:
                out["result"] = self.answer_one(r, on_token=q.put)
            except BaseException as exc:  # re-raised in the caller's thread
                out["error"] = exc
            finally:
                q.put(None)

        threading.Thread(target=work, name="llm-stream", daemon=True).start()
        ids: list[int] = []
        said = ""
        while (tok := q.get()) is not None:
            if len(ids) >= r.max_new_tokens:
                continue
            ids.append(tok)
            text = self._text([i for i in ids if i not in self.eos])
            if text.endswith("\ufffd"):  # half a character so far: wait for the rest
                continue
            if len(text) > len(said):  # a token can add no text of its own yet (a split character)
                yield {"delta": text[len(said):]}
                said = text
        if "error" in out:
            raise out["error"]
        res = out["result"]
        if len(res.answer) > len(said):
            yield {"delta": res.answer[len(said):]}
        yield {"result": res}

    @torch.no_grad()
    def answer_one(self, r: LLMRequest, on_token=None) -> LLMResult:
        """One request, alone (``on_token``: called with each new token id as it is generated)."""
        start = time.time()
        if r.reuse_key is not None:
            return self._answer_kept(r, start, on_token)
        return self._answer_batch([r], r.options, start, on_token)[0]

    def _inputs(self, r: LLMRequest) -> SegmentInputs:
        pre, suf = self.prompt_ids(r.question)
        return inputs_from_segments(self.model, self.segments(r), pre, suf)

    def _result(self, r: LLMRequest, x: SegmentInputs, ids: list[int], start: float, t_first: float, t_rest: float,
                batch: int, prefilled: int, reused: int = 0, prefill_extra_s: float = 0.0) -> LLMResult:
        mine = ids[: r.max_new_tokens]
        stopped = bool(mine) and mine[-1] in self.eos
        return LLMResult(
            answer=self._text(mine), new_tokens=len(mine), visual_tokens=x.visual_tokens,
            visual_tokens_uncompressed=x.visual_tokens_uncompressed, queue_ms=1e3 * (start - r.enqueued_at),
            prefill_ms=1e3 * (prefill_extra_s + t_first), decode_ms=1e3 * t_rest, batch_size=batch,
            prefilled_tokens=prefilled, reused_tokens=reused, finish_reason="stop" if stopped else "length",
            prompt_tokens=x.inputs_embeds.shape[1])

    def _answer_batch(self, requests: list[LLMRequest], opts: GenerationOptions, start: float,
                      on_token=None) -> list[LLMResult]:
        from transformers import DynamicCache

        inputs = [self._inputs(r) for r in requests]
        B = len(inputs)
        L = max(x.inputs_embeds.shape[1] for x in inputs)
        D = inputs[0].inputs_embeds.shape[2]
        embeds = torch.zeros(B, L, D, dtype=inputs[0].inputs_embeds.dtype)
        mask = torch.zeros(B, L, dtype=torch.long)
        pos = torch.ones(B, L, dtype=torch.long)
        for b, x in enumerate(inputs):  # left padding
            n = x.inputs_embeds.shape[1]
            embeds[b, L - n:] = x.inputs_embeds[0]
            mask[b, L - n:] = 1
            pos[b, L - n:] = x.position_ids[0]
        cache = DynamicCache(config=self.model.config.get_text_config())
        steps = max(r.max_new_tokens for r in requests)
        ids, t_first, t_rest = self._generate(embeds.to(self.device), mask.to(self.device), pos.to(self.device),
                                              steps, opts, cache, on_token)
        return [self._result(r, x, ids[b], start, t_first, t_rest, B, x.inputs_embeds.shape[1])
                for b, (r, x) in enumerate(zip(requests, inputs))]

    def _extend(self, r: LLMRequest) -> _Extended:
        """Bring the KV cache kept under ``r.reuse_key`` up to ``r``'s window (rebuilt if its start moved),
        prefilling only the segments added since."""
        from transformers import DynamicCache

        # what the cache can hold: the reading's frames before its newest (the live frame, or the held now
        # frame), which is read again with the question each time (streamdycoke.reading)
        segs = self.segments(r)
        heads = {id(s): h for s, h in zip(segs, map(read_header, r.segments))}
        cached = reading(segs)[:-1]  # stored segments (the reading keeps them as they are)
        ids = [(h.frame_index, h.num_kept, h.timestamp, h.crc) for h in (heads[id(s)] for s in cached)]
        kept = self.kept.pop(r.reuse_key, None)
        if kept is None or kept.segment_ids != ids[: len(kept.segment_ids)]:  # new, or its start moved: rebuild
            kept = _KeptWindow([], DynamicCache(config=self.model.config.get_text_config()), 0)
        self.kept[r.reuse_key] = kept  # most recently used last
        while len(self.kept) > self.kept_windows:
            self.kept.popitem(last=False)
        x = self._inputs(r)
        pre_len = self.prompt_ids(r.question)[0].shape[0]
        visual_end = pre_len + sum(kept_count for _, kept_count, _, _ in ids)  # prefix + the cached frames' tokens
        reused = kept.length
        t0 = time.perf_counter()
        if visual_end > kept.length:  # the incremental prefill: only the segments added since
            try:
                self.model(inputs_embeds=x.inputs_embeds[:, kept.length:visual_end].to(self.device),
                           attention_mask=torch.ones(1, visual_end, dtype=torch.long, device=self.device),
                           position_ids=x.position_ids[..., kept.length:visual_end].to(self.device),
                           cache=kept.cache, use_cache=True)
            except BaseException:
                self.kept.pop(r.reuse_key, None)  # half-written: not to be trusted
                raise
        kept.segment_ids, kept.length = ids, visual_end
        return _Extended(x, kept, visual_end, reused, time.perf_counter() - t0)

    def _answer_kept(self, r: LLMRequest, start: float, on_token=None) -> LLMResult:
        """One request from the KV cache kept under its ``reuse_key``: prefill what the window added, then
        the question; the cache keeps the window, not the question or the answer."""
        e = self._extend(r)
        x, kept, visual_end, reused, t_window = e.inputs, e.kept, e.visual_end, e.reused, e.prefill_s
        try:
            ids, t_first, t_rest = self._generate(
                x.inputs_embeds.to(self.device), x.attention_mask.to(self.device), x.position_ids.to(self.device),
                r.max_new_tokens, r.options, kept.cache, on_token)
        except BaseException:
            self.kept.pop(r.reuse_key, None)  # half-written: not to be trusted
            raise
        kept.cache.crop(visual_end - kept.cache.get_seq_length())  # the question and the answer go
        return self._result(r, x, ids[0], start, t_first, t_rest, 1, x.inputs_embeds.shape[1] - reused, reused,
                            prefill_extra_s=t_window)

    def _answer_kept_batch(self, requests: list[LLMRequest], opts: GenerationOptions, start: float) -> list[LLMResult]:
        """Several requests from their kept caches, as one batch: each window is brought up to date alone
        (:meth:`_extend`), then a batch cache is made of copies of the windows' caches, left-padded to the
        longest (padding masked out), and the questions and answers are generated together, each at its own
        positions. The kept caches themselves are not touched by the questions."""
        from transformers import DynamicCache

        if len(requests) == 1:
            return [self._answer_kept(requests[0], start)]
        prepared = [self._extend(r) for r in requests]
        B = len(prepared)
        Lc = max(e.visual_end for e in prepared)  # the longest window in the cache
        tails = [e.inputs.inputs_embeds.shape[1] - e.visual_end for e in prepared]  # extras + question, per row
        S = max(tails)
        D = prepared[0].inputs.inputs_embeds.shape[2]
        embeds = torch.zeros(B, Lc + S, D, dtype=prepared[0].inputs.inputs_embeds.dtype)
        mask = torch.zeros(B, Lc + S, dtype=torch.long)
        pos = torch.ones(B, Lc + S, dtype=torch.long)
        batch_cache = DynamicCache(config=self.model.config.get_text_config())
        layers = [e.kept.cache.layers for e in prepared]
        for li in range(len(layers[0])):
            ks, vs = [], []
            for b, v in enumerate(e.visual_end for e in prepared):
                key, val = layers[b][li].keys, layers[b][li].values  # (1, H, v, Dh)
                pad = (0, 0, Lc - v, 0)  # on the left of the sequence dimension
                ks.append(torch.nn.functional.pad(key, pad))
                vs.append(torch.nn.functional.pad(val, pad))
            batch_cache.update(torch.cat(ks), torch.cat(vs), li)
        for b, (x, v, n) in enumerate((e.inputs, e.visual_end, n) for e, n in zip(prepared, tails)):
            mask[b, Lc - v:Lc] = 1
            embeds[b, Lc + S - n:] = x.inputs_embeds[0, v:]
            mask[b, Lc + S - n:] = 1
            pos[b, Lc + S - n:] = x.position_ids[0, v:]
        steps = max(r.max_new_tokens for r in requests)
        ids, t_first, t_rest = self._generate(embeds.to(self.device), mask.to(self.device), pos.to(self.device),
                                              steps, opts, batch_cache)
        return [self._result(r, e.inputs, ids[b], start, t_first, t_rest, B, e.inputs.inputs_embeds.shape[1] - e.reused,
                             e.reused, prefill_extra_s=e.prefill_s)
                for b, (r, e) in enumerate(zip(requests, prepared))]
