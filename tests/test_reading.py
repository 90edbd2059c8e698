"""The one reading of a compressed stream: the kept past, then the newest frame whole (the live frame),
or, without one, the held state restated at the newest frame."""

import pytest
import torch

from streamdycoke import InMemoryTokenStore, StreamCompressor, StreamConfig
from streamdycoke.reading import now_segment, read_count, reading, whole
from streamdycoke.segment import TokenSegment, decode_segment, reconstruct

pytestmark = pytest.mark.unit


def _frames(T=12, N=16, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(N, D, generator=g)
    out = []
    for t in range(T):
        x = base + 0.05 * torch.randn(N, D, generator=g)
        if t >= 4:
            x[:3] += 2.0 * torch.randn(3, D, generator=g)  # something moves at three positions
        out.append(x)
    return out


def _segments(frames):
    comp = StreamCompressor(StreamConfig(window=6, budget_ratio=0.3))
    st = comp.new_state("cam")
    return [comp.process(st, x, (4, 4), t, t / 5) for t, x in enumerate(frames)]


def _live(x, t):
    return TokenSegment(stream_id="cam", frame_index=t, timestamp=t / 5, positions=torch.arange(x.shape[0]),
                        tokens=x.to(torch.float16), keyframe=False, grid=(4, 4))


def test_with_a_live_frame_the_reader_gets_the_older_frames_kept_tokens_then_the_newest_frame_whole():
    frames = _frames()
    segs = _segments(frames)
    live = _live(frames[-1], len(frames) - 1)
    read = reading(segs, live)
    assert read[-1] is live and whole(read[-1])
    assert [s.frame_index for s in read[:-1]] == list(range(len(segs) - 1))  # the newest stored one is replaced
    assert all(a is b for a, b in zip(read[:-1], segs[:-1]))
    # the tokens counted: the kept ones of the older frames, plus one frame: what read_count says of the mask
    keep = torch.zeros(len(segs), 16, dtype=torch.bool)
    for s in segs:
        keep[s.frame_index, s.positions] = True
    assert sum(s.num_kept for s in read) == read_count(keep, len(segs) - 1) == int(keep[:-1].sum()) + 16
    assert read_count(keep, 5, since=2) == int(keep[2:5].sum()) + 16
    # the live frame is the frame as it is, not as the stream holds it: it differs where the budget lagged
    assert not torch.equal(read[-1].tokens.float(), reconstruct(segs)[-1])


def _ids(read):
    return [(id(s), s.frame_index, s.num_kept) for s in read]


def _shape(read):
    return [(s.frame_index, s.num_kept) for s in read]


def test_a_live_frame_newer_than_the_window_follows_it_and_a_stale_one_is_set_aside():
    frames = _frames()
    segs = _segments(frames)[:8]
    newer = _live(frames[10], 10)  # frames 8..10 skipped by the sampler: the live frame is still the newest in
    assert _ids(reading(segs, newer)) == _ids([*segs, newer])
    stale = _live(frames[5], 5)  # read between a batch's segments and its live frame
    assert _shape(reading(segs, stale)) == _shape(reading(segs))
    assert _shape(reading([*segs, stale])) == _shape(reading(segs))  # as the store appends it
    other = TokenSegment(stream_id="cam", frame_index=9, timestamp=1.8, positions=torch.arange(4),
                         tokens=torch.zeros(4, 8, dtype=torch.float16), keyframe=False, grid=(2, 2))
    assert _shape(reading(segs, other)) == _shape(reading(segs))  # another grid: not this window's frame


def test_without_a_live_frame_the_now_frame_restates_every_position_not_kept_at_the_newest_frame():
    segs = _segments(_frames())
    now = now_segment(segs)
    held = reconstruct(segs)[-1]  # (N, D): what the stream holds at the newest frame
    newest = set(segs[-1].positions.tolist())
    assert now is not None and set(now.positions.tolist()) == set(range(16)) - newest
    assert torch.equal(now.tokens.float(), held[now.positions])
    assert now.frame_index == segs[-1].frame_index and not now.keyframe
    read = reading(segs)
    assert len(read) == len(segs) + 1 and all(a is b for a, b in zip(read, segs)) and read[-1].positions.equal(now.positions)
    assert now_segment(segs[:1]) is None and len(reading(segs[:1])) == 1  # the first frame is whole


def test_the_store_hands_readers_the_window_then_the_live_frame():
    frames = _frames()
    segs = _segments(frames)
    store = InMemoryTokenStore()
    store.append_many(segs[:6])
    assert store.reader_window_raw("cam", start=0.0) == store.read_raw("cam", start=0.0)  # no live frame yet
    store.put_live(_live(frames[5], 5))
    got = [decode_segment(b) for b in store.reader_window_raw("cam", window_s=10.0)]
    assert [s.frame_index for s in got] == [0, 1, 2, 3, 4, 5, 5] and whole(got[-1])
    assert [s.frame_index for s in reading(got)] == [0, 1, 2, 3, 4, 5] and whole(reading(got)[-1])
    assert store.read_raw("cam") == store.read_raw("cam", start=None)  # the stored window itself is unchanged
    assert store.frame_count("cam") == 6
    assert store.reader_window_raw("nobody", window_s=5.0) == []
