"""DyCoke's dynamic KV pruning while decoding (DyCokeKVCache)."""

import pytest
import torch

from streamdycoke import apply_patch
from streamdycoke.patch import PatchConfig
from streamdycoke.patch.kv import DyCokeKVCache

from .test_patch import MODELS, VIDEO


def kv_cfg(p=0.7, rule="drift"):
    return PatchConfig(method="none", kv_pruning=True, kv_layer=1, kv_prune_ratio=p, kv_recompute=rule)


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


# -- the two rules on a designed attention sequence (no model: the cache's selection logic alone) ------------
S = 12  # prompt: text 0-1, visual 2-10 (10 is LLaVA's newline), text 11
VISUAL = torch.zeros(1, S, dtype=torch.bool)
VISUAL[0, 2:11] = True
A = torch.tensor([0, 0, 4, 3, 2, 1, 0.5, 0.3, 0.2, 0, 0, 0.0])  # attention on the first frames' tokens
B = torch.tensor([0, 0, 0.2, 0.3, 0.5, 1, 2, 3, 4, 0, 0, 0.0])  # ... on the last ones


def attention(t: int) -> torch.Tensor:
    """Steps 0-12 drift slowly from A to B (consecutive cosine >= 0.99, to step 0 down to 0.2); step 13
    jumps back to A and step 14 stays there."""
    w = min(t, 12) / 12 if t < 13 else 0.0
    p = 0.01 + (1 - w) * A + w * B
    return p / p.sum()


def run_rule(rule: str) -> tuple[DyCokeKVCache, list[int], list[int]]:
    from types import SimpleNamespace

    from streamdycoke.encoders.llava import tiny_llava_onevision_config

    cache = DyCokeKVCache(SimpleNamespace(config=tiny_llava_onevision_config()), VISUAL, layer=1, prune_ratio=0.5,
                          rule=rule, extra_tokens=1)
    keys = torch.eye(S).view(1, 1, S, S)  # query log(p) against identity keys: the attention is exactly p
    selected_at = []
    for t in range(15):
        before = cache.selections
        cache.observe(attention(t).log().view(1, 1, 1, S), keys, None, 1.0)
        if cache.selections > before:
            selected_at.append(t)
    pruned_at = [t for t, rows in enumerate(cache.pruned_steps) if rows[0]]
    return cache, selected_at, pruned_at


def test_dycoke_rule_compares_with_the_previous_step_and_prunes_only_when_attention_changed():
    """The authors' rule: a slow drift never differs much from the step before, so after the first decode
    step nothing is pruned until the attention jumps (step 13); the step after the jump is stable again."""
    cache, selected_at, pruned_at = run_rule("dycoke")
    assert selected_at == pruned_at == [0, 13]
    # candidates exclude the last visual token (9) and the newline (10), as in the authors' code
    assert cache.candidates[0].tolist() == [2, 3, 4, 5, 6, 7, 8] and cache.keep_counts == [3]
    assert cache.key_index is None, "step 14: stable, every key"


def test_dycoke_rule_keeps_the_top_candidates_of_this_step_and_always_the_last_visual_and_newline():
    from types import SimpleNamespace

    from streamdycoke.encoders.llava import tiny_llava_onevision_config

    cache = DyCokeKVCache(SimpleNamespace(config=tiny_llava_onevision_config()), VISUAL, layer=1, prune_ratio=0.5,
                          rule="dycoke", extra_tokens=1)
    cache.observe(attention(0).log().view(1, 1, 1, S), torch.eye(S).view(1, 1, S, S), None, 1.0)
    assert cache.key_index[0].tolist() == [0, 1, 2, 3, 4, 9, 10, 11]


def test_drift_rule_compares_with_the_selection_reference_and_always_prunes():
    """Ours: the reference is the attention the selection came from, so a slow drift triggers new
    selections (steps 5 and 9, when the cosine to it falls below 0.9), and every step is pruned."""
    cache, selected_at, pruned_at = run_rule("drift")
    assert selected_at == [0, 5, 9, 13]
    assert pruned_at == list(range(15))
    assert cache.candidates[0].tolist() == list(range(2, 11)) and cache.keep_counts == [4]  # every visual token


def test_the_default_rule_is_the_authors():
    assert PatchConfig().kv_recompute == "dycoke"
    with pytest.raises(ValueError, match="kv_recompute"):
        PatchConfig(kv_recompute="sometimes")


@pytest.mark.parametrize("name", list(MODELS))
def test_dycoke_rule_in_a_real_model_prunes_at_the_first_decode_step(name, monkeypatch):
    make, inputs = MODELS[name]
    model = apply_patch(make(), kv_cfg(0.7, rule="dycoke"))
    x = inputs(noise=0.3)
    model.generate(**x)
    steps = model._streamdycoke_last_kv_cache.pruned_steps
    assert steps and steps[0] == [True], "the first decode step has no previous attention: it prunes"


def test_kv_layer_must_leave_a_layer_to_select_from():
    make, inputs = MODELS["llava-onevision"]
    model = apply_patch(make(), PatchConfig(method="none", kv_pruning=True, kv_layer=0))
    with pytest.raises(ValueError, match="kv layer"):
        model.generate(**inputs())
