"""DyCoke's dynamic KV pruning while decoding (DyCokeKVCache)."""

import pytest
import torch

from streamdycoke import apply_patch
from streamdycoke.patch import PatchConfig
from streamdycoke.patch.kv import DyCokeKVCache

from .test_patch import MODELS, VIDEO


def kv_cfg(p=0.7):
    return PatchConfig(method="none", kv_pruning=True, kv_layer=1, kv_prune_ratio=p)


def record_key_lengths(cache_cls=DyCokeKVCache):
    seen = []
    orig = cache_cls.update

    def update(self, k, v, layer_idx, *a, **kw):
        keys, values = orig(self, k, v, layer_idx, *a, **kw)
        seen.append((layer_idx, k.shape[-2], keys.shape[-2], self.get_seq_length(layer_idx)))
        return keys, values

    return seen, update, orig


@pytest.mark.parametrize("name", list(MODELS))
def test_prune_ratio_zero_equals_the_unpatched_model(name):
    make, inputs = MODELS[name]
    model = make()
    x = inputs(noise=0.3)
    ref = model.generate(**x)
    apply_patch(model, kv_cfg(0.0))
    assert torch.equal(model.generate(**x), ref)


@pytest.mark.parametrize("name", list(MODELS))
def test_layers_from_L_attend_over_fewer_keys_while_decoding(name, monkeypatch):
    make, inputs = MODELS[name]
    model = apply_patch(make(), kv_cfg(0.7))
    x = inputs(noise=0.3)
    seen, update, _ = record_key_lengths()
    monkeypatch.setattr(DyCokeKVCache, "update", update)
    model.generate(**x)
    n_vis = int((x["input_ids"] == VIDEO).sum())
    decode = [s for s in seen if s[1] == 1]
    assert decode, "decode steps were seen"
    for layer, _, served, stored in decode:
        if layer == 0:
            assert served == stored, "layers below L see every key"
        else:
            # text + generated tokens + the kept 30% of visual tokens; every key still stored
            assert served == stored - n_vis + int(n_vis * 0.3 + 1e-9)
    prefill = [s for s in seen if s[1] > 1]
    assert all(served == stored for _, _, served, stored in prefill), "prefill is not pruned"


@pytest.mark.parametrize("name", list(MODELS))
def test_batch_of_two_gets_per_row_selections(name):
    make, inputs = MODELS[name]
    model = apply_patch(make(), kv_cfg(0.7))
    a, b = inputs(seed=1, noise=0.3), inputs(seed=2, noise=0.3)
    both = {k: (torch.cat([a[k], b[k]]) if isinstance(a[k], torch.Tensor) else a[k]) for k in a}
    out = model.generate(**both)
    cache = model._streamdycoke_last_kv_cache
    sel = cache._selected
    assert len(sel) == 2 and not torch.equal(sel[0], sel[1]), "each row selects from its own attention"
    assert torch.equal(out[0], model.generate(**a)[0])
    assert torch.equal(out[1], model.generate(**b)[0])


def test_selection_is_kept_while_attention_is_stable_and_recomputed_when_it_shifts():
    vis = torch.tensor([[False, True, True, True, True, False]])
    # the selection logic alone, without a model: set the state __init__ would
    cache = DyCokeKVCache.__new__(DyCokeKVCache)
    cache.__dict__.update(dict(
        layer=1, visual_mask=vis, prompt_len=6, keep_counts=[2], recompute_similarity=0.9,
        key_index=None, key_valid=None, _ref_attention=[None], _selected=[None], selections=0,
    ))
    d = 4
    keys = torch.zeros(1, 1, 6, d)
    for i in range(6):
        keys[0, 0, i, i % d] = 1.0
    keys[0, 0, 4] = torch.tensor([0.0, 0.0, 0.0, -1.0])

    def q_toward(*dims):
        q = torch.zeros(1, 1, 1, d)
        for i in dims:
            q[0, 0, 0, i] = 8.0
        return q

    cache.observe(q_toward(1, 2), keys, None, 1.0)  # attends to positions 1 and 2
    assert cache._selected[0].tolist() == [1, 2] and cache.selections == 1
    cache.observe(q_toward(1, 2), keys, None, 1.0)  # same attention: kept
    assert cache.selections == 1
    cache.observe(q_toward(3), keys, None, 1.0)  # attention moves to position 3
    assert cache.selections == 2 and 3 in cache._selected[0].tolist()
    assert cache.key_index[0].tolist() == sorted([0, 5] + cache._selected[0].tolist())


def test_kv_layer_must_leave_a_layer_to_select_from():
    make, inputs = MODELS["llava-onevision"]
    model = apply_patch(make(), PatchConfig(method="none", kv_pruning=True, kv_layer=0))
    with pytest.raises(ValueError, match="kv layer"):
        model.generate(**inputs())
