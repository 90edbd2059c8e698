"""Cached segments as LLM input: the same answer as the live patched path, without the vision tower."""

import pytest
import torch

from streamdycoke import StreamCompressor, apply_patch
from streamdycoke.patch import PatchConfig
from streamdycoke.patch.core import host_for
from streamdycoke.patch.segments import generate_from_segments, inputs_from_segments

from .test_patch import MODELS, VIDEO


def segments_for(model, x, cfg):
    """Encode the call's video with the model's own tower and compress it the way a camera would."""
    v = host_for(model).video_tokens(model, x)[0]
    comp = StreamCompressor(cfg.stream)
    st = comp.new_state("cam")
    return [comp.process(st, v.frames[t].detach(), v.grid, t, t / 2.0) for t in range(v.frames.shape[0])]


@pytest.mark.parametrize("name", list(MODELS))
def test_segments_path_answers_like_the_patched_model(name):
    make, inputs = MODELS[name]
    cfg = PatchConfig(method="stream", stream=PatchConfig().stream.__class__(token_dtype="float16"))
    model = apply_patch(make(), cfg)
    x = inputs(noise=0.3)
    with torch.no_grad():
        segs = segments_for(model, x, cfg)
    ids = x["input_ids"][0]
    slots = (ids == VIDEO).nonzero().squeeze(1)
    prefix, suffix = ids[: slots[0]], ids[slots[-1] + 1:]
    live = model.generate(**x, output_scores=True, return_dict_in_generate=True)
    # the patched model prunes a whole clip in its forward and reads the kept tokens alone: without the
    # now frame, the segments path is that same input
    cached, inp = generate_from_segments(model, segs, prefix, suffix, now=False, max_new_tokens=4, do_sample=False,
                                         output_scores=True, return_dict_in_generate=True)
    n_prompt = x["input_ids"].shape[1]
    assert torch.equal(cached.sequences[0, -4:], live.sequences[0, n_prompt:])
    # tokens were stored in fp16: logits agree to rounding
    assert torch.allclose(cached.scores[0], live.scores[0], atol=1e-2)
    assert inp.visual_tokens < inp.visual_tokens_uncompressed == int((ids == VIDEO).sum())


def test_segment_inputs_reject_mismatched_segments():
    make, inputs = MODELS["llava-onevision"]
    model = make()
    x = inputs()
    segs = segments_for(model, x, PatchConfig())
    with pytest.raises(ValueError, match="no segments"):
        inputs_from_segments(model, [], torch.tensor([1]), torch.tensor([2]))
    bad = [s.__class__(s.stream_id, s.frame_index, s.timestamp, s.positions[:0], s.tokens[:0], False, (3, 3)) for s in segs[:1]]
    with pytest.raises(ValueError, match="grid"):
        inputs_from_segments(model, bad, torch.tensor([1]), torch.tensor([2]))


@pytest.mark.parametrize("name", list(MODELS))
def test_segment_inputs_end_with_the_now_frame_of_held_tokens_counted_in_the_visual_tokens(name):
    from streamdycoke.reading import now_segment

    make, inputs = MODELS[name]
    model = make()
    x = inputs(noise=0.3)
    with torch.no_grad():
        segs = segments_for(model, x, PatchConfig(stream=PatchConfig().stream.__class__(token_dtype="float16")))
    ids = x["input_ids"][0]
    slots = (ids == VIDEO).nonzero().squeeze(1)
    prefix, suffix = ids[: slots[0]], ids[slots[-1] + 1:]
    bare = inputs_from_segments(model, segs, prefix, suffix, now=False)
    read = inputs_from_segments(model, segs, prefix, suffix)
    now = now_segment(segs)
    assert now is not None and 0 < now.num_kept and not bool(torch.isin(now.positions, segs[-1].positions).any())
    assert read.visual_tokens == bare.visual_tokens + now.num_kept
    assert read.visual_tokens_uncompressed == bare.visual_tokens_uncompressed
    assert read.inputs_embeds.shape[1] == bare.inputs_embeds.shape[1] + now.num_kept
    # the stored frames and the prompt before them are laid out as without the now frame
    P, V = prefix.shape[0], sum(s.num_kept for s in segs)
    assert torch.equal(read.inputs_embeds[0, :P + V], bare.inputs_embeds[0, :P + V])
    assert torch.equal(read.position_ids[..., :P + V], bare.position_ids[..., :P + V])
    # then the restated tokens: each position's last kept token
    emb = read.inputs_embeds[0, P + V:P + V + now.num_kept]
    assert torch.equal(emb, now.tokens.to(emb.dtype))
