"""What is sent to the LLM deployment: a question over a camera's window (:class:`LLMRequest`) and how
its answer is generated (:class:`GenerationOptions`).

The message lives in the lower layer because both sides build it: a camera actor's standing queries
(:mod:`actors.answerers`) and the gateway (:mod:`deployments.app`); the replica that answers it is
:class:`deployments.llm.LLMEngine`. Segments travel in their wire format (checked when decoded,
never unpickled).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["GenerationOptions", "LLMRequest"]


@dataclass(frozen=True)
class GenerationOptions:
    """How an answer is generated (what OpenAI's ``temperature``, ``top_p`` and ``seed`` map onto).

    ``temperature`` 0 decodes greedily; above 0 it samples (``top_p``: nucleus). ``seed`` makes a
    sampled answer repeatable (it seeds the batch it runs in, so a seeded request runs in a batch of
    its own options only)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def sampled(self) -> bool:
        return self.temperature > 0


@dataclass
class LLMRequest:
    """One question over one camera's window, as an actor or the gateway sends it to an LLM replica."""

    camera: str
    question: str
    max_new_tokens: int
    segments: list[bytes]  # wire-format segments (decoded with checks, never unpickled)
    enqueued_at: float = field(default_factory=time.time)  # wall clock: it crosses processes
    num_tokens: int = 0  # visual tokens it brings to a batch: set by the LLM replica (LLMEngine.visual_tokens)
    options: GenerationOptions = field(default_factory=GenerationOptions)
    reuse_key: str | None = None  # keep and reuse this window's KV cache under this key (incremental prefill)
    # ``segments`` decoded, once, by the LLM replica that answers; never sent (dropped when pickled), so a
    # replica always decodes what it is sent, with every check
    decoded: list | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "decoded": None}
