"""Differential encoding (streamdycoke/encoders/differential.py) on LLaVA-OneVision's tower (tiny, random):
exact at threshold 0, recomputes only what changed, whole on the stated conditions, bounded state."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamdycoke import EncoderSpec, PipelineConfig, build_pipeline
from streamdycoke.encoders.differential import DifferentialConfig, DifferentialEncoder, TowerState, tower_macs
from streamdycoke.encoders.llava import LlavaOnevisionEncoder


@pytest.fixture(scope="module")
def enc():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LlavaOnevisionEncoder(None)  # 64 px, 8 px patches: 8 x 8 patches, pooled to 4 x 4 tokens


def frames(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_threshold_zero_is_exactly_the_full_encoding_frame_after_frame(enc):
    states = [TowerState() for _ in range(3)]
    cfg = DifferentialConfig(threshold=0.0)
    for step in range(3):
        f = frames(3, seed=step)
        f[:, :16] = 7  # part of each frame the same frame after frame
        assert torch.equal(enc.encode_differential(f, states, cfg), enc.encode(f))
        assert enc.last_stats.whole == [True, True, True]


def test_a_frame_recomputes_only_the_changed_patches_and_their_halo(enc):
    f = frames(1)
    st = [TowerState()]
    cfg = DifferentialConfig(threshold=0.02, halo=1, refresh_every=0)
    first = enc.encode_differential(f, st, cfg)
    assert enc.last_stats.whole == [True]
    g = f.copy()
    g[0, :8, :8] = 255 - g[0, :8, :8]  # one patch (the top-left) changes
    out = enc.encode_differential(g, st, cfg)
    assert enc.last_stats.computed == [4]  # it and its 3 neighbours inside the frame (halo 1)
    assert not enc.last_stats.whole[0]
    # far from the change the tokens are the cached ones, near it they follow the new frame
    assert torch.equal(out[0, -1], first[0, -1])
    full = enc.encode(g)
    assert F.cosine_similarity(out[0, 0], full[0, 0], dim=0) > F.cosine_similarity(first[0, 0], full[0, 0], dim=0)
    same = enc.encode_differential(g, st, cfg)  # nothing changed: nothing computed, the same tokens
    assert enc.last_stats.computed == [0] and torch.equal(same, out)


def test_a_reference_moves_only_when_its_patch_is_recomputed_so_slow_drift_adds_up(enc):
    f = frames(1).astype(np.int16)
    st = [TowerState()]
    cfg = DifferentialConfig(threshold=0.02, halo=0, refresh_every=0)
    enc.encode_differential(f.astype(np.uint8), st, cfg)
    computed = []
    for step in range(1, 5):  # +3/255 a frame on one patch: 0.012 per frame, over 0.02 after two frames
        g = f.copy()
        g[0, 8:16, 8:16] = np.clip(g[0, 8:16, 8:16] + 3 * step, 0, 255)
        enc.encode_differential(g.astype(np.uint8), st, cfg)
        computed.append(enc.last_stats.computed[0])
    assert computed[0] == 0 and 1 in computed[1:]


def test_whole_frames_on_refresh_and_when_too_much_changed(enc):
    st = [TowerState()]
    cfg = DifferentialConfig(threshold=0.02, halo=0, refresh_every=3, full_above=0.5)
    f = frames(1)
    whole = []
    for _ in range(4):
        enc.encode_differential(f, st, cfg)
        whole.append(enc.last_stats.whole[0])
    assert whole == [True, False, False, True]  # the first frame, then every 3rd
    enc.encode_differential(frames(1, seed=9), st, cfg)  # a cut: every patch changed
    assert enc.last_stats.whole == [True]


def test_streams_in_one_batch_keep_their_own_state_and_a_none_state_is_encoded_whole(enc):
    a, b = frames(2)
    st = [TowerState(), None]
    cfg = DifferentialConfig(threshold=0.02, halo=0, refresh_every=0)
    enc.encode_differential(np.stack([a, b]), st, cfg)
    a2 = a.copy()
    a2[:8, :8] = 0
    out = enc.encode_differential(np.stack([a2, b]), st, cfg)
    assert enc.last_stats.whole == [False, True] and enc.last_stats.computed == [1, 64]
    assert torch.allclose(out[1], enc.encode(b[None])[0], atol=1e-5)


def test_the_state_is_bounded_and_dropped_by_reset(enc):
    e = DifferentialEncoder(enc, DifferentialConfig(threshold=0.02))
    sizes = []
    for i in range(5):
        e.encode(frames(1, seed=i % 2))
        sizes.append(e.state.nbytes())
    assert len(set(sizes)) == 1 and sizes[0] > 0
    e.reset()
    assert e.state.empty
    e.encode(frames(1))
    assert enc.last_stats.whole == [True]


def test_a_pipeline_with_differential_encoding_wraps_its_encoder_and_refuses_other_towers(enc):
    p = build_pipeline("cam", PipelineConfig(encoder=EncoderSpec(weights=None), differential=DifferentialConfig()),
                       encoder=enc)
    assert isinstance(p.encoder, DifferentialEncoder)
    out = p.push(frames(1)[0], 0, 0.0)
    assert out.segment is not None
    with pytest.raises(ValueError, match="differential"):
        PipelineConfig(encoder=EncoderSpec("pixels"), differential=DifferentialConfig())


def test_operations_count_follows_the_recomputed_patches():
    full = tower_macs(729, 1152, 4304, 26, 729)
    assert tower_macs(729, 1152, 4304, 26, 0) < full / 400  # the patch embedding alone
    assert full / tower_macs(729, 1152, 4304, 26, 182) == pytest.approx(3.99, abs=0.01)


@pytest.mark.parametrize("kw", [{"threshold": -0.1}, {"halo": -1}, {"refresh_every": -1}, {"full_above": 0.0}])
def test_config_refuses_bad_values(kw):
    with pytest.raises(ValueError):
        DifferentialConfig(**kw)


def test_a_scene_cut_the_sampler_sees_encodes_the_frame_whole(enc):
    from streamdycoke.sampler import SamplerDecision

    p = build_pipeline("cam", PipelineConfig(encoder=EncoderSpec(weights=None), differential=DifferentialConfig(),
                                             sampler=None), encoder=enc)
    f = frames(1)[0]
    p.push(f, 0, 0.0)
    p.push(f, 1, 0.1)
    assert enc.last_stats.whole == [False]  # nothing changed: nothing recomputed
    p.push(f, 2, 0.2, decision=SamplerDecision(process=True, pixel_change=0.5, scene_cut=True))
    assert enc.last_stats.whole == [True]
