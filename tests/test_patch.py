"""apply_patch on tiny random configs of the real model classes (no weights can be downloaded here)."""

import pytest
import torch
from transformers import (
    LlavaOnevisionForConditionalGeneration, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
    Qwen2VLForConditionalGeneration, VideoLlama3Config, VideoLlama3ForConditionalGeneration,
)

from streamdycoke import PolicySpec, apply_patch
from streamdycoke.budget import ttm_frame_budgets
from streamdycoke.encoders.llava import tiny_llava_onevision_config
from streamdycoke.patch import PatchConfig

VIDEO, VSTART, VEND = 999, 997, 996


def qwen(cls_cfg, cls_model):
    cfg = cls_cfg(
        text_config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=1000,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}),
        vision_config=dict(depth=2, num_heads=2, patch_size=14, temporal_patch_size=2, spatial_merge_size=2,
                           embed_dim=64, hidden_size=128, out_hidden_size=128, intermediate_size=128),
        video_token_id=VIDEO, image_token_id=998, vision_start_token_id=VSTART, vision_end_token_id=VEND,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(0)
    return cls_model(cfg).eval()


def qwen_inputs(t=4, h=8, w=8, seed=0, batch=1, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    n = t * h * w // 4
    ids = torch.tensor([[5, 6, 7, VSTART] + [VIDEO] * n + [VEND, 8, 9, 10]] * batch)
    base = torch.randn(h * w, 3 * 2 * 14 * 14, generator=g)
    # a mostly still video: every temporal step repeats the first, plus a little change
    pv = torch.cat([base + noise * torch.randn(h * w, base.shape[1], generator=g) for _ in range(t * batch)])
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=pv,
                video_grid_thw=torch.tensor([[t, h, w]] * batch), mm_token_type_ids=(ids == VIDEO).int() * 2,
                max_new_tokens=4, do_sample=False)


def llava(frames=8):
    torch.manual_seed(0)
    m = LlavaOnevisionForConditionalGeneration(tiny_llava_onevision_config()).eval()
    m.generation_config.pad_token_id = 0
    return m


def llava_inputs(frames=8, batch=1, seed=0, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    n = frames * 16 + 1
    ids = torch.tensor([[5, 6, 7] + [VIDEO] * n + [8, 9, 10]] * batch)
    base = torch.randn(1, 1, 3, 64, 64, generator=g)
    pv = base + noise * torch.randn(batch, frames, 3, 64, 64, generator=g)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=pv,
                max_new_tokens=4, do_sample=False)


def videollama3():
    cfg = VideoLlama3Config(
        text_config=dict(model_type="qwen2", vocab_size=1000, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, patch_size=14),
        image_token_id=998, video_token_id=VIDEO,
    )
    torch.manual_seed(0)
    m = VideoLlama3ForConditionalGeneration(cfg).eval()
    m.generation_config.pad_token_id = 0
    return m


def videollama3_inputs(t=4, h=8, w=8, seed=0, batch=1, noise=0.05, compression_mask=None):
    g = torch.Generator().manual_seed(seed)
    n = t * h * w // 4 if compression_mask is None else int(compression_mask.sum())
    ids = torch.tensor([[5, 6, 7] + [VIDEO] * n + [8, 9, 10]] * batch)
    base = torch.randn(h * w, 3 * 14 * 14, generator=g)
    pv = torch.cat([base + noise * torch.randn(h * w, base.shape[1], generator=g) for _ in range(t * batch)])
    x = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=pv,
             video_grid_thw=torch.tensor([[t, h, w]] * batch), video_merge_sizes=torch.tensor([2] * batch),
             max_new_tokens=4, do_sample=False)
    if compression_mask is not None:
        x["video_compression_mask"] = compression_mask
    return x


MODELS = {
    "qwen2-vl": (lambda: qwen(Qwen2VLConfig, Qwen2VLForConditionalGeneration), qwen_inputs),
    "qwen2.5-vl": (lambda: qwen(Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration), qwen_inputs),
    "llava-onevision": (llava, llava_inputs),
    "videollama3": (videollama3, videollama3_inputs),
}


def capture_positions(model):
    """Record the position_ids and sequence length the language model gets at each forward."""
    seen = []

    def hook(_mod, _args, kwargs):
        seen.append((kwargs["position_ids"].clone(), kwargs["inputs_embeds"].shape[1]))

    return seen, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("name", list(MODELS))
def test_compression_off_equals_the_unpatched_model(name):
    make, inputs = MODELS[name]
    model = make()
    ref = model.generate(**inputs())
    apply_patch(model, PatchConfig(method="none"))
    assert torch.equal(model.generate(**inputs()), ref)
    # keeping every token through the whole pruning path changes nothing either
    apply_patch(model, PatchConfig(method="stream", policy=PolicySpec("fixed:1.0")))
    assert torch.equal(model.generate(**inputs()), ref)


@pytest.mark.parametrize("name", list(MODELS))
def test_kept_counts_equal_the_budget_function_and_prompt_is_restored(name):
    make, inputs = MODELS[name]
    model = apply_patch(make(), PatchConfig(method="ttm", merge_ratio=0.7))
    x = inputs()
    seen, h = capture_positions(model)
    out = model.generate(**x)
    h.remove()
    if name == "llava-onevision":
        T, N, extra = 8, 16, 1
    else:
        T, N, extra = 4, 16, 0
    kept_video = sum(ttm_frame_budgets(T, N, 0.7, 4)) + extra
    n_text = int((x["input_ids"] != VIDEO).sum())
    assert seen[0][1] == n_text + kept_video, "prefill length = text + budgeted video tokens"
    assert torch.equal(out[:, : x["input_ids"].shape[1]], x["input_ids"])
    assert out.shape[1] == x["input_ids"].shape[1] + 4


@pytest.mark.parametrize("name", ["qwen2-vl", "qwen2.5-vl"])
def test_mrope_positions_of_kept_tokens_are_their_unpruned_positions(name):
    make, inputs = MODELS[name]
    model = make()
    x = inputs()
    full, _ = model.model.get_rope_index(x["input_ids"], mm_token_type_ids=x["mm_token_type_ids"],
                                         video_grid_thw=x["video_grid_thw"], attention_mask=x["attention_mask"])
    seen_ref, h = capture_positions(model)
    model.generate(**x)
    h.remove()
    apply_patch(model, PatchConfig(method="ttm", merge_ratio=0.7))
    seen, h = capture_positions(model)
    model.generate(**x)
    h.remove()
    prefill = seen[0][0]  # (4, 1, L')
    assert prefill.shape[0] == 4
    mrope = prefill[1:, 0]  # (3, L')
    # every kept column is a column of the unpruned grid, in the same order
    cols = {tuple(c): i for i, c in enumerate(full[:, 0].T.tolist())}
    idx = [cols[tuple(c)] for c in mrope.T.tolist()]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    # the text after the video keeps its positions, and decoding continues from them
    assert torch.equal(mrope[:, -4:], full[:, 0, -4:])
    for (p_ref, _), (p, _) in zip(seen_ref[1:], seen[1:]):
        assert torch.equal(p[1:], p_ref[1:]), "decode positions match the unpruned model's"
    # the kept video tokens are exactly the ones TTM keeps: frame 0 whole
    t_rows = mrope[0, 4:-4]
    assert int((t_rows == t_rows.min()).sum()) == 16


def test_llava_positions_original_keep_gaps_and_contiguous_renumbers():
    x = llava_inputs()
    model = apply_patch(llava(), PatchConfig(method="ttm"))
    seen, h = capture_positions(model)
    model.generate(**x)
    h.remove()
    pos = seen[0][0][0]
    L = x["input_ids"].shape[1]
    assert int(pos[-1]) == L - 1 and len(pos) < L, "text after the video keeps its original position"
    apply_patch(model, PatchConfig(method="ttm", positions_1d="contiguous"))
    seen, h = capture_positions(model)
    model.generate(**x)
    h.remove()
    assert torch.equal(seen[0][0][0], torch.arange(len(seen[0][0][0])))


@pytest.mark.parametrize("name", list(MODELS))
def test_batch_of_two_with_different_kept_counts_matches_each_row_alone(name):
    make, inputs = MODELS[name]
    model = apply_patch(make(), PatchConfig(method="stream"))
    a, b = inputs(seed=1, noise=0.0), inputs(seed=2, noise=1.0)  # a still video and a changing one
    both = {k: (torch.cat([a[k], b[k]]) if isinstance(a[k], torch.Tensor) else a[k]) for k in a}
    lengths = []
    for x in (a, b):
        seen, h = capture_positions(model)
        out_row = model.generate(**x)
        h.remove()
        lengths.append(seen[0][1])
        x["expected"] = out_row[0]
    assert lengths[0] < lengths[1], "rows keep different numbers of tokens, so the batch is left-padded"
    out = model.generate(**both)
    assert torch.equal(out[0], a["expected"])
    assert torch.equal(out[1], b["expected"])


def test_videollama3_own_compression_mask_composes_with_ours():
    """VideoLLaMA3's processor may drop tokens itself; ours are chosen on the full grid and intersected."""
    from streamdycoke.patch.core import host_for, select_tokens

    own = torch.ones(64, dtype=torch.bool)
    own[20:40] = False  # the processor dropped these (no placeholder)
    x = videollama3_inputs(compression_mask=own)
    model = videollama3()
    ref = model.generate(**x)
    apply_patch(model, PatchConfig(method="none"))
    assert torch.equal(model.generate(**x), ref)
    cfg = PatchConfig(method="ttm")
    apply_patch(model, cfg)
    v = host_for(model).video_tokens(model, x)[0]
    ours = select_tokens(v.frames, v.grid, cfg).reshape(-1)
    seen, h = capture_positions(model)
    model.generate(**x)
    h.remove()
    assert seen[0][1] == 6 + int((ours & own).sum())


def test_patching_one_instance_leaves_another_untouched():
    m1, m2 = llava(), llava()
    cls = type(m2)
    apply_patch(m1)
    assert type(m2) is cls and type(m1) is not cls and isinstance(m1, cls)
    assert not hasattr(m2, "_streamdycoke_config")
    assert LlavaOnevisionForConditionalGeneration.generate is cls.generate


def test_unsupported_model_gets_a_clear_error():
    with pytest.raises(TypeError, match="Supported: .*Qwen2VLForConditionalGeneration.*SupportsVideoTokenPruning"):
        apply_patch(torch.nn.Linear(2, 2))
