import numpy as np
import pytest

from streamdycoke import FrameSampler, SamplerConfig

from .conftest import rgb


def decisions(frames, fps=30.0, **cfg):
    s = FrameSampler(SamplerConfig(**cfg))
    return [s.decide(f, i / fps) for i, f in enumerate(frames)]


def test_still_scene_is_sampled_at_min_fps():
    still = [rgb(64, 64, seed=0)] * 90  # 3 s at 30 fps
    d = decisions(still, min_fps=2.0, max_fps=15.0)
    processed = [i for i, x in enumerate(d) if x.process]
    assert processed == [0, 15, 30, 45, 60, 75]


def test_changing_scene_is_sampled_up_to_max_fps_and_never_faster():
    moving = [rgb(64, 64, seed=i) for i in range(90)]  # every frame different
    d = decisions(moving, min_fps=1.0, max_fps=10.0, scene_cut_threshold=1.0)
    processed = [i for i, x in enumerate(d) if x.process]
    assert processed == list(range(0, 90, 3))


def test_more_change_means_more_frames():
    base = rgb(64, 64, seed=1).astype(np.int16)
    slow = [np.clip(base + int(i * 0.2), 0, 255).astype(np.uint8) for i in range(120)]
    fast = [np.clip(base + int(i * 2.0), 0, 255).astype(np.uint8) for i in range(120)]
    n_slow = sum(x.process for x in decisions(slow))
    n_fast = sum(x.process for x in decisions(fast))
    assert n_fast > 2 * n_slow


def test_scene_cut_is_flagged_and_processed_at_once():
    frames = [rgb(64, 64, value=20)] * 5 + [rgb(64, 64, value=230)]
    d = decisions(frames, min_fps=0.1, max_fps=30)
    assert d[-1].process and d[-1].scene_cut and not d[3].scene_cut


def test_bad_frames_and_config_are_rejected():
    s = FrameSampler()
    with pytest.raises(ValueError, match="uint8"):
        s.decide(np.zeros((64, 64, 3), dtype=np.float32), 0.0)
    with pytest.raises(ValueError, match="smaller"):
        s.decide(np.zeros((8, 8, 3), dtype=np.uint8), 0.0)
    with pytest.raises(ValueError):
        SamplerConfig(min_fps=10, max_fps=5)


def test_under_a_budget_every_frame_is_processed_and_a_share_floor_is_met():
    from streamdycoke import PipelineConfig, StreamConfig

    still = [rgb(64, 64, seed=0)] * 40
    s = FrameSampler(SamplerConfig(min_fps=1.0).for_budget(0.125))  # the reader's live frame stays current
    assert [i for i, f in enumerate(still) if s.decide(f, i / 30.0).process] == list(range(40))
    s = FrameSampler(SamplerConfig(min_fps=1.0, min_share=0.25))
    assert [i for i, f in enumerate(still) if s.decide(f, i / 30.0).process] == list(range(0, 40, 4))
    s = FrameSampler(SamplerConfig(min_share=0.45))
    n = sum(s.decide(f, i / 30.0).process for i, f in enumerate(still))
    assert n == 1 + int(39 * 0.45 + 1e-9)  # a share that is not 1/k is met, not rounded down to 1/3
    assert SamplerConfig().for_budget(None) == SamplerConfig() and SamplerConfig().for_budget(0.1).min_share == 1.0
    assert PipelineConfig(stream=StreamConfig(budget_ratio=0.2)).sampler.min_share == 1.0  # applied where a stream is built
    with pytest.raises(ValueError, match="min_share"):
        SamplerConfig(min_share=1.5)
