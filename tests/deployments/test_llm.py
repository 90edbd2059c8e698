"""LLMEngine on the tiny random LLaVA-OneVision (no weights here), from real compressed segments."""

import numpy as np
import pytest

from deployments.llm import LLMEngine, LLMRequest
from streamdycoke import EncoderSpec, StreamCompressor, StreamConfig
from streamdycoke.budget import window_visual_tokens
from streamdycoke.encoders import build_encoder
from streamdycoke.segment import decode_segment, encode_segment
from streamdycoke.video import decode_frames, make_camera_video


@pytest.fixture(scope="module")
def engine():
    with pytest.warns(UserWarning, match="TINY RANDOM"):
        return LLMEngine(EncoderSpec(weights=None))


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    """Two cameras' compressed windows, encoded by the same (tiny) LLaVA-OneVision tower."""
    with pytest.warns(UserWarning):
        enc = build_encoder(EncoderSpec(weights=None))
    out = []
    for seed, frames in ((1, 12), (2, 20)):
        video = make_camera_video(tmp_path_factory.mktemp("v") / "c.mp4", seconds=1, seed=seed)
        rgb = [f.rgb for f in decode_frames(str(video), size=enc.input_size)][:frames]
        toks = enc.encode(np.stack(rgb))
        comp = StreamCompressor(StreamConfig(window=8))
        st = comp.new_state(f"cam{seed}")
        out.append([encode_segment(comp.process(st, toks[i], enc.grid, i, i / 30)) for i in range(frames)])
    return out


def test_batched_answers_equal_single_answers_and_use_fewer_tokens(engine, windows):
    reqs = [LLMRequest(f"cam{i}", "what is moving?", 5, w) for i, w in enumerate(windows)]
    batch = engine.answer(reqs)
    alone = [engine.answer([r])[0] for r in reqs]
    for b, a, r in zip(batch, alone, reqs):
        assert b.answer == a.answer and b.new_tokens == 5 and b.batch_size == 2
        assert b.visual_tokens < b.visual_tokens_uncompressed
        # what the batcher counts for a request is what its answer reports (kept tokens + the newline)
        assert engine.visual_tokens(r.segments) == b.visual_tokens
        kept = [decode_segment(x).num_kept for x in r.segments]
        assert b.visual_tokens == window_visual_tokens(kept, 1) == sum(kept) + 1
        assert b.prefill_ms > 0 and b.decode_ms > 0 and b.queue_ms >= 0
