import pytest
import torch

from streamdycoke import (
    FixedRatioPolicy, StreamCompressor, apply_segment, StreamConfig, StreamState, ThresholdPolicy, fidelity, frame_token_budget,
    reconstruct,
)
from streamdycoke.segment import decode_segment, encode_segment

GRID = (6, 6)


def run(tokens, policy=None, window=8, **cfg):
    comp = StreamCompressor(StreamConfig(window=window, **cfg), policy)
    state = comp.new_state("s")
    segs = [comp.process(state, x, GRID, i, i / 30) for i, x in enumerate(tokens)]
    return comp, state, segs


def test_judged_frames_keep_exactly_the_budget(stream_tokens):
    _, _, segs = run(stream_tokens, FixedRatioPolicy(0.3), scene_cut_similarity=-1.0)
    for s in segs:
        assert s.num_kept == (36 if s.keyframe else frame_token_budget(36, 0.3))


def test_keyframes_are_whole_and_come_every_window(stream_tokens):
    _, _, segs = run(stream_tokens, ThresholdPolicy(0.9), window=8, scene_cut_similarity=-1.0)
    keys = [s.frame_index for s in segs if s.keyframe]
    assert keys == list(range(0, 40, 8))
    assert all(torch.equal(s.positions, torch.arange(36)) for s in segs if s.keyframe)


def test_scene_cut_forces_a_keyframe(stream_tokens):
    comp = StreamCompressor(StreamConfig(window=100), FixedRatioPolicy(0.1))
    st = comp.new_state("s")
    comp.process(st, stream_tokens[0], GRID, 0, 0.0)
    assert not comp.process(st, stream_tokens[1], GRID, 1, 0.1).keyframe
    assert comp.process(st, stream_tokens[2], GRID, 2, 0.2, scene_cut=True).keyframe
    other = torch.randn(36, 16)  # unrelated frame: mean similarity ~0 < 0.5
    assert comp.process(st, other, GRID, 3, 0.3).keyframe


def test_kept_positions_unique_sorted_and_least_similar(stream_tokens):
    _, _, segs = run(stream_tokens, FixedRatioPolicy(0.25))
    held = None
    for s, x in zip(segs, stream_tokens):
        p = s.positions
        assert bool((p[1:] > p[:-1]).all())
        if not s.keyframe:
            sim = torch.nn.functional.cosine_similarity(x.half().float(), held, dim=-1)
            dropped = torch.ones(36, dtype=torch.bool)
            dropped[p] = False
            assert sim[p].max() <= sim[dropped].min() + 1e-6
        held = apply_segment(held, s)


def test_keep_ratio_one_is_identity_with_fidelity_one(stream_tokens):
    _, state, segs = run(stream_tokens, FixedRatioPolicy(1.0))
    rec = reconstruct(segs)
    assert torch.equal(rec, stream_tokens.half().float())
    assert fidelity(stream_tokens.half().float(), rec) == pytest.approx(1.0, abs=1e-6)
    assert state.stats.fidelity == pytest.approx(1.0)


def test_running_fidelity_equals_fidelity_of_reconstruction(stream_tokens):
    _, state, segs = run(stream_tokens, ThresholdPolicy(0.95))
    rec = reconstruct(decode_segment(encode_segment(s)) for s in segs)
    assert state.stats.fidelity == pytest.approx(fidelity(stream_tokens.half().float(), rec), abs=1e-5)
    assert state.stats.tokens_kept == sum(s.num_kept for s in segs)


def test_state_stays_bounded_over_10000_frames():
    comp = StreamCompressor(StreamConfig(window=8), ThresholdPolicy(0.9))
    st = comp.new_state("s")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 8, generator=g)
    sizes = []
    for i in range(10_000):
        x = base + 0.3 * torch.randn(16, 8, generator=g)
        comp.process(st, x, (4, 4), i, i / 30)
        if i in (10, 9_999):
            sizes.append(st.nbytes())
        # every held token lies inside the sliding window
        assert i - int(st.held_frame.min()) < 8
    assert sizes[0] == sizes[1] == 16 * 8 * 4 + 16 * 8
    assert st.stats.frames == 10_000


def test_state_rebuilt_from_segments_decides_identically(stream_tokens):
    comp, state, segs = run(stream_tokens[:21], ThresholdPolicy(0.9))
    stored = [decode_segment(encode_segment(s)) for s in segs]
    resumed = StreamState.from_segments("s", stored)
    assert resumed.last_frame_index == 20 and resumed.frames_since_keyframe == state.frames_since_keyframe
    assert torch.allclose(resumed.held_unit, state.held_unit, atol=1e-6)
    for i in range(21, 40):
        a = comp.process(state, stream_tokens[i], GRID, i, i / 30)
        b = comp.process(resumed, stream_tokens[i], GRID, i, i / 30)
        assert torch.equal(a.positions, b.positions) and a.keyframe == b.keyframe


def test_bad_input_is_rejected_with_a_clear_error(stream_tokens):
    comp = StreamCompressor()
    st = comp.new_state("s")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        comp.process(st, torch.zeros(35, 16), GRID, 0, 0.0)
    comp.process(st, stream_tokens[0], GRID, 5, 0.0)
    with pytest.raises(ValueError, match="not after"):
        comp.process(st, stream_tokens[1], GRID, 5, 0.1)
    bad = stream_tokens[1].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        comp.process(st, bad, GRID, 6, 0.2)
    with pytest.raises(ValueError):
        StreamConfig(window=0)
    with pytest.raises(ValueError):
        StreamConfig(token_dtype="float32")


def test_under_a_small_budget_keyframes_spread_so_they_spend_at_most_their_share(stream_tokens):
    cfg = StreamConfig(window=8, budget_ratio=0.05, keyframe_share=0.5, scene_cut_similarity=-1.0)
    assert cfg.keyframe_interval == 40 and StreamConfig(window=8, budget_ratio=0.5, keyframe_share=0.5).keyframe_interval == 8
    assert StreamConfig(window=8, budget_ratio=0.05).keyframe_interval == 40  # the default share is 0.5
    assert StreamConfig(window=8, budget_ratio=0.05, keyframe_share=None).keyframe_interval == 8  # every W
    assert StreamConfig(window=8).keyframe_interval == 8  # without a budget: every W
    comp = StreamCompressor(cfg)
    st = comp.new_state("s")
    segs = [comp.process(st, x, GRID, i, i / 30) for i, x in enumerate(stream_tokens)]
    assert [s.frame_index for s in segs if s.keyframe] == [0]
    assert sum(s.num_kept for s in segs) <= 0.05 * 36 * len(segs) + 36  # the budget, the first frame's overdraft aside


def test_refresh_ranks_stale_positions_first_when_nothing_changes(stream_tokens):
    x = stream_tokens[0]
    comp = StreamCompressor(StreamConfig(window=100, budget_ratio=0.25, refresh=1.0))
    st = comp.new_state("s")
    segs = [comp.process(st, x, GRID, i, i / 30) for i in range(24)]  # a still scene: only staleness differs
    kept = torch.cat([s.positions for s in segs[1:]]).tolist()
    assert len(kept) >= 36 and sorted(kept[:36]) == list(range(36))  # each refreshed once before any twice


def test_under_a_budget_cuts_on_every_frame_do_not_spend_whole_frames_past_it():
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(36, 8, generator=g) for _ in range(60)]  # every frame unlike the last: a "cut" each time
    comp = StreamCompressor(StreamConfig(window=16, budget_ratio=0.1))
    st = comp.new_state("s")
    segs = [comp.process(st, x, GRID, i, i / 30, scene_cut=i % 2 == 0) for i, x in enumerate(frames)]
    kept = sum(s.num_kept for s in segs)
    assert kept <= 0.1 * 36 * 60 + 36  # the budget, one whole frame of overdraft at most
    assert sum(s.keyframe for s in segs) < 15  # cuts taken out of credit, not on every frame
