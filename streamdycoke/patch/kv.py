"""DyCoke's dynamic KV pruning while decoding, as a transformers 5 cache class.

At a decode step, the last token's attention over the visual tokens is taken at layer ``L - 1``,
averaged over heads, and layers ``>= L`` attend over the text, the generated tokens, and the top
``(1 - P)`` of the candidate visual tokens by that attention (the keys, values and mask are
gathered). Prefill is not pruned. When to prune is the rule (``PatchConfig.kv_recompute``):

- ``"dycoke"`` (default), the authors' rule, as in ``modeling_qwen2.py`` of KD-TAO/DyCoke: compare this
  step's attention with the *previous step's* (cosine); only when it is below 0.9 (and at the first
  decode step) select the top tokens from this step's attention and prune at this step; otherwise
  layers ``>= L`` attend over every key at this step. The candidates are the visual tokens except the
  last one and the host's trailing extras (LLaVA's ``image_newline``): those are always attended,
  as in the authors' code (their candidate window is the merged video tokens minus one, before the
  newline is appended).
- ``"drift"``: compare with the attention the current selection was made *from*; always prune; select
  again when that cosine drops below ``recompute_similarity``, so a slow drift that never changes much
  between two steps still leads to a new selection. Every visual token is a candidate.

Differences from the authors' code, on purpose: each row of a batch has its own attention, reference
and selection (theirs reads batch index 0 for all rows); the mask is gathered with the keys (theirs
passes no mask); the kept count is :func:`streamdycoke.budget.frame_token_budget`, whose guard keeps
``floor(r * n)`` for the keep ratio ``r = 1 - P`` as written (theirs computes ``int(n * (1 - P))`` in
floating point, which for n = 100, P = 0.9 keeps 9, not 10). Memory is not freed in either: every key
stays in the cache, because a pruned token may come back at a later step; what shrinks is the
attention work of layers ``>= L`` per decode step.

How it hooks in, per instance: while a patched model generates with ``kv_pruning``, its text
config's attention implementation is set to ``"streamdycoke_dycoke"`` (SDPA plus the two steps
above) and every attention module gets a reference to this cache; both are undone afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..budget import frame_token_budget

__all__ = ["ATTN_NAME", "KV_RULES", "DyCokeKVCache", "kv_pruning"]

ATTN_NAME = "streamdycoke_dycoke"
KV_RULES = ("dycoke", "drift")


class DyCokeKVCache(DynamicCache):
    """A :class:`~transformers.DynamicCache` that serves layers ``>= layer`` a pruned set of visual keys.

    Args:
        model: the model it serves (for its config).
        visual_mask: ``(B, L)`` bool, which prompt positions are visual tokens.
        layer: L (>= 1).
        prune_ratio: P, the fraction of each row's candidate visual tokens pruned.
        recompute_similarity: the cosine threshold of either rule (the paper's 0.9).
        rule: ``"dycoke"`` (the authors' rule) or ``"drift"`` (see the module docstring).
        extra_tokens: always-attended trailing visual tokens per row (LLaVA's newline: 1); with
            ``"dycoke"`` the last visual token before them is always attended too.
    """

    def __init__(self, model: Any, visual_mask: torch.Tensor, layer: int = 3, prune_ratio: float = 0.7,
                 recompute_similarity: float = 0.9, rule: str = "dycoke", extra_tokens: int = 0) -> None:
        super().__init__(config=model.config.get_text_config())
        n_layers = model.config.get_text_config().num_hidden_layers
        if not 1 <= layer < n_layers:
            raise ValueError(f"kv layer must be in [1, {n_layers - 1}] for a {n_layers}-layer model, got {layer}")
        if rule not in KV_RULES:
            raise ValueError(f"kv rule must be one of {KV_RULES}, got {rule!r}")
        self.layer = layer
        self.rule = rule
        self.visual_mask = visual_mask.bool()
        self.prompt_len = visual_mask.shape[1]
        fixed = 1 + extra_tokens if rule == "dycoke" else 0  # always attended: not candidates
        self.candidates = [r.nonzero().squeeze(1) for r in self.visual_mask]
        self.candidates = [c[: max(0, len(c) - fixed)] for c in self.candidates]
        self.keep_counts = [frame_token_budget(len(c), 1.0 - prune_ratio) for c in self.candidates]
        self.recompute_similarity = recompute_similarity
        self.key_index: torch.Tensor | None = None  # (B, K) prompt positions layers >= L attend to
        self.key_valid: torch.Tensor | None = None  # (B, K) False for padding slots
        self._ref_attention: list[torch.Tensor | None] = [None] * visual_mask.shape[0]
        self._selected: list[torch.Tensor | None] = [None] * visual_mask.shape[0]  # None: no pruning now
        self.selections = 0  # how many times a row's selection was (re)computed
        self.pruned_steps: list[list[bool]] = []  # per decode step, per row: were layers >= L pruned

    # -- selection -------------------------------------------------------------------------------
    def observe(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None, scaling: float) -> None:
        """Take the last token's attention at layer L-1 and decide each row's keys for this step.

        ``query`` ``(B, Hq, 1, d)``, ``keys`` ``(B, Hkv, S, d)``, ``mask`` ``(B, 1, 1, S)`` or None.
        """
        B, Hq, _, d = query.shape
        Hkv = keys.shape[1]
        q = query[:, :, -1].float().view(B, Hkv, Hq // Hkv, d)
        scores = torch.einsum("bhgd,bhsd->bhgs", q, keys.float()) * scaling  # (B, Hkv, g, S)
        if mask is not None:
            m = mask[:, 0, -1].unsqueeze(1).unsqueeze(1)  # (B, 1, 1, S)
            scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m
        attn = scores.softmax(-1).mean(dim=(1, 2))  # (B, S)
        for b in range(B):
            cand = self.candidates[b]
            a = attn[b, cand]
            ref = self._ref_attention[b]
            sim = 0.0 if ref is None else float(F.cosine_similarity(a, ref, dim=0))
            select = ref is None or sim < self.recompute_similarity
            if self.rule == "dycoke":  # the previous step is the reference; no pruning when stable
                self._ref_attention[b] = a
                self._selected[b] = cand[a.topk(self.keep_counts[b]).indices].sort().values if select else None
            elif select:  # drift: the reference is what the selection was made from; always pruned
                self._ref_attention[b] = a
                self._selected[b] = cand[a.topk(self.keep_counts[b]).indices].sort().values
            self.selections += int(select)
        self.pruned_steps.append([s is not None for s in self._selected])
        self._build_index()

    def _build_index(self) -> None:
        if all(sel is None for sel in self._selected):  # no row pruned at this step: nothing to gather
            self.key_index = self.key_valid = None
            return
        rows = []
        for b in range(self.visual_mask.shape[0]):
            if self._selected[b] is None:  # not pruned at this step: every prompt key
                rows.append(torch.arange(self.prompt_len))
                continue
            always = torch.ones(self.prompt_len, dtype=torch.bool)
            always[self.candidates[b]] = False  # text, and the visual tokens that are not candidates
            rows.append(torch.cat([always.nonzero().squeeze(1), self._selected[b]]).sort().values)
        K = max(len(r) for r in rows)
        self.key_index = torch.stack([F.pad(r, (0, K - len(r))) for r in rows])
        self.key_valid = torch.stack([torch.arange(K) < len(r) for r in rows])

    def _index(self, total: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Key positions (and validity) for a cache of ``total`` keys: selection + generated tokens."""
        B = self.key_index.shape[0]
        gen = torch.arange(self.prompt_len, total).expand(B, -1)
        idx = torch.cat([self.key_index, gen], dim=1).to(device)
        valid = torch.cat([self.key_valid, torch.ones_like(gen, dtype=torch.bool)], dim=1).to(device)
        return idx, valid

    # -- cache -----------------------------------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        if layer_idx >= self.layer and self.key_index is not None and key_states.shape[-2] == 1:
            idx, _ = self._index(keys.shape[-2], keys.device)
            g = idx[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])
            keys, values = keys.gather(2, g), values.gather(2, g)
        return keys, values

    def pruned_mask(self, mask: torch.Tensor | None, total: int, device: torch.device) -> torch.Tensor | None:
        """The attention mask narrowed to the keys :meth:`update` serves (``(B, 1, q, K')``)."""
        idx, valid = self._index(total, device)
        if mask is None:
            return None if bool(valid.all()) else valid[:, None, None, :]
        g = idx[:, None, None, :].expand(-1, mask.shape[1], mask.shape[2], -1)
        m = mask.gather(3, g)
        if m.dtype == torch.bool:
            return m & valid[:, None, None, :]
        return m.masked_fill(~valid[:, None, None, :], torch.finfo(m.dtype).min)


def _dycoke_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, **kwargs: Any):
    cache: DyCokeKVCache | None = getattr(module, "_streamdycoke_kv", None)
    if cache is not None and query.shape[-2] == 1:
        if module.layer_idx == cache.layer - 1:
            cache.observe(query, key, attention_mask, kwargs.get("scaling") or module.scaling)
        elif module.layer_idx >= cache.layer and cache.key_index is not None:
            total = cache.layers[module.layer_idx].get_seq_length()
            attention_mask = cache.pruned_mask(attention_mask, total, query.device)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTN_NAME, _dycoke_attention)
AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


@contextmanager
def kv_pruning(model: Any, cache: DyCokeKVCache) -> Iterator[None]:
    """While inside, ``model`` (this instance) decodes with ``cache``'s pruning."""
    text_cfg = model.config.get_text_config()
    before = text_cfg._attn_implementation
    attn = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "q_proj")]
    text_cfg._attn_implementation = ATTN_NAME
    for m in attn:
        m._streamdycoke_kv = cache
    try:
        yield
    finally:
        text_cfg._attn_implementation = before
        for m in attn:
            del m._streamdycoke_kv
