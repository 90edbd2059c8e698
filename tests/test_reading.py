"""The one reading of a compressed stream: kept tokens, then the held state restated at the newest frame."""

import torch

from streamdycoke import StreamCompressor, StreamConfig
from streamdycoke.reading import now_segment, now_slots, reading
from streamdycoke.segment import reconstruct


def _segments(T=12, N=16, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(N, D, generator=g)
    comp = StreamCompressor(StreamConfig(window=6, budget_ratio=0.3))
    st = comp.new_state("cam")
    segs = []
    for t in range(T):
        x = base + 0.05 * torch.randn(N, D, generator=g)
        if t >= 4:
            x[:3] += 2.0 * torch.randn(3, D, generator=g)  # something moves at three positions
        segs.append(comp.process(st, x, (4, 4), t, t / 5))
    return segs


def test_the_now_frame_restates_every_position_not_kept_at_the_newest_frame_as_the_stream_holds_it():
    segs = _segments()
    now = now_segment(segs)
    held = reconstruct(segs)[-1]  # (N, D): what the stream holds at the newest frame
    newest = set(segs[-1].positions.tolist())
    assert now is not None and set(now.positions.tolist()) == set(range(16)) - newest
    assert torch.equal(now.tokens.float(), held[now.positions])
    assert now.frame_index == segs[-1].frame_index and not now.keyframe
    read = reading(segs)
    assert len(read) == len(segs) + 1 and all(a is b for a, b in zip(read, [*segs, now][:-1])) and read[-1].positions.equal(now.positions)


def test_mask_and_segment_forms_agree_and_a_whole_newest_frame_needs_no_now_frame():
    segs = _segments()
    keep = torch.zeros(len(segs), 16, dtype=torch.bool)
    for s in segs:
        keep[s.frame_index, s.positions] = True
    for t in range(len(segs)):
        positions, frames = now_slots(keep, t)
        now = now_segment(segs[: t + 1])
        got = [] if now is None else now.positions.tolist()
        assert positions.tolist() == got
        for p, f in zip(positions.tolist(), frames.tolist()):
            assert keep[f, p] and not keep[f + 1:t + 1, p].any()  # its last kept token
    assert now_segment(segs[:1]) is None and len(reading(segs[:1])) == 1  # the first frame is whole
    assert now_slots(torch.ones(3, 4, dtype=torch.bool), 2)[0].numel() == 0
