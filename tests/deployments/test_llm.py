"""LLMEngine on the tiny random LLaVA-OneVision (no weights here), from real compressed segments."""

import numpy as np
import pytest

from actors.llm_request import LLMRequest
from deployments.llm import LLMEngine
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
def encoded(tmp_path_factory):
    """Two cameras' compressed windows, encoded by the same (tiny) LLaVA-OneVision tower, and each frame
    whole as the live frame a reader is given (streamdycoke.reading)."""
    import torch

    from streamdycoke.segment import TokenSegment

    with pytest.warns(UserWarning):
        enc = build_encoder(EncoderSpec(weights=None))
    out, live = [], []
    for seed, frames in ((1, 12), (2, 20)):
        video = make_camera_video(tmp_path_factory.mktemp("v") / "c.mp4", seconds=1, seed=seed)
        rgb = [f.rgb for f in decode_frames(str(video), size=enc.input_size)][:frames]
        toks = enc.encode(np.stack(rgb))
        comp = StreamCompressor(StreamConfig(window=8))
        st = comp.new_state(f"cam{seed}")
        out.append([encode_segment(comp.process(st, toks[i], enc.grid, i, i / 30)) for i in range(frames)])
        n = toks.shape[1]
        live.append([encode_segment(TokenSegment(f"cam{seed}", i, i / 30, torch.arange(n), toks[i].half(), False,
                                                 enc.grid)) for i in range(frames)])
    return out, live


@pytest.fixture(scope="module")
def windows(encoded):
    return encoded[0]


def test_batched_answers_equal_single_answers_and_use_fewer_tokens(engine, windows):
    reqs = [LLMRequest(f"cam{i}", "what is moving?", 5, w) for i, w in enumerate(windows)]
    batch = engine.answer(reqs)
    alone = [engine.answer([r])[0] for r in reqs]
    for b, a, r in zip(batch, alone, reqs):
        assert b.answer == a.answer and b.new_tokens == 5 and b.batch_size == 2
        assert b.visual_tokens < b.visual_tokens_uncompressed
        # what the batcher counts for a request is what its answer reports (kept tokens, the now frame,
        # the newline)
        assert engine.visual_tokens(r) == b.visual_tokens
        kept = [decode_segment(x).num_kept for x in r.segments] + [_now_tokens(r.segments)]
        assert b.visual_tokens == window_visual_tokens(kept, 1) == sum(kept) + 1 and _now_tokens(r.segments) > 0
        assert b.prefill_ms > 0 and b.decode_ms > 0 and b.queue_ms >= 0
        # the prompt it read: the text's tokens around the visual ones, all prefilled (no cache reused here)
        pre, suf = engine.prompt_ids(r.question)
        assert b.prompt_tokens == b.prefilled_tokens == len(pre) + b.visual_tokens + len(suf)


def test_generation_options_sample_and_a_seed_repeats_the_sample(engine, windows):
    from actors.llm_request import GenerationOptions

    greedy = engine.answer([LLMRequest("cam1", "what is moving?", 6, windows[0])])[0]
    hot = GenerationOptions(temperature=5.0, top_p=1.0, seed=7)
    a, b = (engine.answer([LLMRequest("cam1", "what is moving?", 6, windows[0], options=hot)])[0] for _ in range(2))
    others = {engine.answer([LLMRequest("cam1", "what is moving?", 6, windows[0],
                                        options=GenerationOptions(temperature=5.0, seed=s))])[0].answer
              for s in range(4)}
    assert a.answer == b.answer, "one seed, one sample"
    assert len(others | {greedy.answer}) > 1, "sampling at temperature 5 never left the greedy answer"
    assert a.finish_reason == "length" and a.new_tokens == 6  # the tiny random model has no end of sequence


def test_incremental_prefill_answers_equal_full_prefill_as_the_window_grows_and_slides(engine, windows):
    """A standing query's window grows at its newest end (only new segments are prefilled), then its start
    moves (the kept cache is rebuilt): every answer equals the one-shot answer over the same window."""
    w = windows[1]  # 20 segments
    engine.forget("")
    steps = [(0, 8), (0, 11), (0, 11), (0, 16), (5, 17), (5, 20)]  # (first, end): grows, repeats, slides, grows
    for first, end in steps:
        window = w[first:end]
        full = engine.answer([LLMRequest("cam2", "what is moving?", 5, window)])[0]
        kept = engine.answer([LLMRequest("cam2", "what is moving?", 5, window, reuse_key="cam2|10")])[0]
        assert kept.answer == full.answer, (first, end)
        assert kept.visual_tokens == full.visual_tokens
        assert kept.prefilled_tokens + kept.reused_tokens == full.prefilled_tokens
    # what was reused: the step that repeated the window prefilled only the question, the slide nothing old
    again = engine.answer([LLMRequest("cam2", "is anyone there?", 5, w[5:20], reuse_key="cam2|10")])[0]
    now = _now_tokens(w[5:20])  # the now frame is read with the question, never kept
    assert again.reused_tokens > 0 and again.prefilled_tokens < 15 + now
    slid = engine.answer([LLMRequest("cam2", "is anyone there?", 5, w[6:20], reuse_key="cam2|10")])[0]
    assert slid.reused_tokens == 0, "a window whose start moved is rebuilt, never cut"
    assert len(engine.kept) == 1


def test_with_live_frames_the_kept_cache_holds_the_older_frames_and_answers_equal_full_prefill(engine, encoded):
    """The store hands a window with the live frame last: the reading replaces the newest stored frame by it,
    the kept cache holds only the frames before it, and each answer equals the one-shot answer."""
    w, live = encoded[0][1], encoded[1][1]
    engine.forget("")
    for end in (8, 11, 11, 16):
        window = [*w[:end], live[end - 1]]
        full = engine.answer([LLMRequest("cam2", "what is moving?", 5, window)])[0]
        kept = engine.answer([LLMRequest("cam2", "what is moving?", 5, window, reuse_key="cam2|live")])[0]
        assert kept.answer == full.answer and kept.visual_tokens == full.visual_tokens, end
        assert kept.prefilled_tokens + kept.reused_tokens == full.prefilled_tokens
        older = sum(decode_segment(x).num_kept for x in w[:end - 1])
        assert full.visual_tokens == window_visual_tokens([older, decode_segment(live[end - 1]).num_kept], 1)
        assert full.visual_tokens_uncompressed == window_visual_tokens([end * decode_segment(live[0]).num_kept], 1)
    again = engine.answer([LLMRequest("cam2", "is anyone there?", 5, [*w[:16], live[15]], reuse_key="cam2|live")])[0]
    pre, _ = engine.prompt_ids("is anyone there?")
    # everything before the live frame came from the cache; the live frame is read again with the question
    assert again.reused_tokens == len(pre) + sum(decode_segment(x).num_kept for x in w[:15])


def test_a_streamed_answer_comes_token_by_token_and_equals_the_whole_answer(engine, windows):
    req = LLMRequest("cam1", "what is moving?", 6, windows[0])
    whole = engine.answer([req])[0]
    items = list(engine.stream(LLMRequest("cam1", "what is moving?", 6, windows[0])))
    deltas, result = [i["delta"] for i in items[:-1]], items[-1]["result"]
    assert len(deltas) == 6 and "".join(deltas) == whole.answer == result.answer
    assert result.new_tokens == 6 and result.batch_size == 1


def test_kept_windows_of_several_cameras_answer_in_one_batch_as_each_would_alone(engine, windows):
    """Requests that reuse kept caches are batched: each window's new segments are prefilled alone, the
    questions and answers together over left-padded copies of the caches; answers equal the one-shot ones."""
    engine.forget("")
    a, b = windows  # 12 and 20 segments: windows of different lengths
    for end_a, end_b in ((6, 10), (9, 16), (12, 20)):  # both grow
        reqs = [LLMRequest("cam1", "what is moving?", 5, a[:end_a], reuse_key="cam1|10"),
                LLMRequest("cam2", "is anyone there?", 5, b[:end_b], reuse_key="cam2|10")]
        batch = engine.answer(reqs)
        for r, got in zip(reqs, batch):
            alone = engine.answer([LLMRequest(r.camera, r.question, 5, r.segments)])[0]
            assert got.answer == alone.answer and got.batch_size == 2, (r.camera, end_a, end_b)
        assert end_a == 6 or all(res.reused_tokens > 0 for res in batch)
    # the kept caches still hold only the windows (the batch's questions went with its copies)
    again = engine.answer([LLMRequest("cam2", "is anyone there?", 5, b[:20], reuse_key="cam2|10")])[0]
    assert again.answer == batch[1].answer and again.prefilled_tokens < 15 + _now_tokens(b[:20])


def _now_tokens(blobs) -> int:
    from streamdycoke.reading import now_segment
    from streamdycoke.segment import decode_segment

    now = now_segment([decode_segment(x) for x in blobs])
    return 0 if now is None else now.num_kept
