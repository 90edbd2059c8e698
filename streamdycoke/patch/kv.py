"""DyCoke's dynamic KV pruning while decoding, as a transformers 5 cache class.

At every decode step the last token's attention over the visual tokens is taken at layer ``L - 1``
(the last layer that attends over all of them), averaged over heads; layers ``>= L`` attend only
over the text, the generated tokens, and the top ``(1 - P)`` visual tokens of that attention. The
selection is kept while the attention stays put and recomputed when the cosine between this step's
attention and the one the selection was made from drops below ``recompute_similarity`` (the
paper's 0.9), so pruned tokens can come back. Prefill is not pruned.

Unlike the authors' code, layers ``>= L`` really attend over fewer keys (the keys and values are
gathered, and the mask with them), and each row of a batch has its own selection (theirs hard-codes
batch index 0). Memory is *not* freed: every key stays in the cache, because a pruned token may come
back at a later step; what shrinks is the attention work of layers ``>= L`` per decode step.

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

__all__ = ["ATTN_NAME", "DyCokeKVCache", "kv_pruning"]

ATTN_NAME = "streamdycoke_dycoke"


class DyCokeKVCache(DynamicCache):
    """A :class:`~transformers.DynamicCache` that serves layers ``>= layer`` a pruned set of visual keys.

    Args:
        model: the model it serves (for its config).
        visual_mask: ``(B, L)`` bool, which prompt positions are visual tokens.
        layer: L (>= 1).
        prune_ratio: P, the fraction of each row's visual tokens pruned.
        recompute_similarity: recompute the selection when the attention's cosine to the one it was
            made from falls below this.
    """

    def __init__(self, model: Any, visual_mask: torch.Tensor, layer: int = 3, prune_ratio: float = 0.7,
                 recompute_similarity: float = 0.9) -> None:
        super().__init__(config=model.config.get_text_config())
        n_layers = model.config.get_text_config().num_hidden_layers
        if not 1 <= layer < n_layers:
            raise ValueError(f"kv layer must be in [1, {n_layers - 1}] for a {n_layers}-layer model, got {layer}")
        self.layer = layer
        self.visual_mask = visual_mask.bool()
        self.prompt_len = visual_mask.shape[1]
        self.keep_counts = [frame_token_budget(int(r.sum()), 1.0 - prune_ratio) for r in self.visual_mask]
        self.recompute_similarity = recompute_similarity
        self.key_index: torch.Tensor | None = None  # (B, K) prompt positions layers >= L attend to
        self.key_valid: torch.Tensor | None = None  # (B, K) False for padding slots
        self._ref_attention: list[torch.Tensor | None] = [None] * visual_mask.shape[0]
        self._selected: list[torch.Tensor | None] = [None] * visual_mask.shape[0]
        self.selections = 0  # how many times a row's selection was (re)computed

    # -- selection -------------------------------------------------------------------------------
    def observe(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None, scaling: float) -> None:
        """Take the last token's attention at layer L-1 and update each row's selection.

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
        changed = False
        for b in range(B):
            vis = self.visual_mask[b].nonzero().squeeze(1)
            a = attn[b, vis]
            ref = self._ref_attention[b]
            if ref is None or F.cosine_similarity(a, ref, dim=0) < self.recompute_similarity:
                k = self.keep_counts[b]
                self._selected[b] = vis[a.topk(k).indices].sort().values
                self._ref_attention[b] = a
                self.selections += 1
                changed = True
        if changed or self.key_index is None:
            self._build_index()

    def _build_index(self) -> None:
        rows = []
        for b in range(self.visual_mask.shape[0]):
            text = (~self.visual_mask[b]).nonzero().squeeze(1)
            rows.append(torch.cat([text, self._selected[b]]).sort().values)
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
