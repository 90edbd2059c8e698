"""The camera handler decides a batch with no broker or cache: what each record becomes, over one ledger."""

import time
from types import SimpleNamespace

import numpy as np
import torch

from actors.camera_batch import CameraHandler, Ledger, parse_meta
from actors.frames import encode_frame, encode_skip
from streamdycoke import EncoderSpec, PipelineConfig, StreamConfig, build_pipeline
from streamdycoke.reading import whole


def _rec(offset, value):
    return SimpleNamespace(offset=offset, value=value, timestamp=time.time() * 1e3)


def _frame(cam, i, t0, seed=None):
    rng = np.random.default_rng(i if seed is None else seed)
    return encode_frame(cam, i, t0 + i / 10, rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))


def _pipeline(cam="door"):
    return build_pipeline(cam, PipelineConfig(encoder=EncoderSpec(name="pixels"),
                                              stream=StreamConfig(window=4), sampler=None))


def test_a_batch_becomes_segments_dead_letters_and_counts_and_a_gap_stops_it_once():
    t0 = time.time() - 100
    p, led, h = _pipeline(), Ledger(), CameraHandler("door", "frames.door")
    batch = [_rec(0, _frame("door", 0, t0)), _rec(1, _frame("door", 1, t0)), _rec(2, b"\x00garbage"),
             _rec(3, _frame("else", 2, t0)), _rec(4, encode_skip("door", 4, t0 + 0.4, skipped_before=1)),
             _rec(5, _frame("door", 5, t0)), _rec(6, _frame("door", 9, t0))]
    out = h.decide(batch, p, led, time.time())
    # frames 0, 1, 5 processed; the garbage and the other camera's dead letters; 3-4 skipped at the edge;
    # frame 9 follows 5: a gap seen for the first time stops the batch there, to re-read the topic
    assert [s.frame_index for s in out.segments] == [0, 1, 5]
    assert [(rec.offset, reason) for rec, reason, _ in out.dead_letters] == [(2, "truncated"), (3, "unknown_camera")]
    c = out.counts
    assert (c.consumed, c.processed, c.skipped, c.dead_lettered) == (7, 3, 2, 2)
    assert c.consumed == c.processed + c.skipped + c.dead_lettered
    assert out.reread_from == 6 and [k for k, _ in out.faults] == ["topic_reset"]
    assert out.live.frame_index == 5 and whole(out.live) and len(out.timings) == 3
    assert led.last_index == 5 and parse_meta(led.meta()) == (5, -1)
    # the same gap read again after the re-read: counted as missing, the batch goes on
    out2 = h.decide([_rec(6, _frame("door", 9, t0))], p, led, time.time())
    assert [k for k, _ in out2.faults] == ["gap"] and led.frames_missing == 3 and out2.reread_from is None
    assert [s.frame_index for s in out2.segments] == [9] and out2.counts.consumed == 1


def test_replays_count_once_a_reused_index_is_a_dead_letter_and_a_repair_stores_again():
    t0 = time.time() - 100
    p, led, h = _pipeline(), Ledger(), CameraHandler("door", "frames.door")
    first = [_rec(i, _frame("door", i, t0)) for i in range(4)]
    out = h.decide(first, p, led, time.time())
    led.committed()
    assert led.counted_through == 3
    again = h.decide(first, p, led, time.time())  # a replay after a restart: stored, counted before
    assert again.segments == [] and again.counts.replayed == 4 and again.counts.consumed == 0
    newer = h.decide([_rec(9, encode_frame("door", 2, time.time(), np.zeros((224, 224, 3), np.uint8)))], p, led,
                     time.time())  # a restarted producer numbering below the topic's end
    assert [r for _, r, _ in newer.dead_letters] == ["index_reused"] and led.frames_missing == 1
    # the cache lost frames 2-3: a fresh pipeline from frame 1's state, frames read again are stored again
    p2 = _pipeline()
    h.decide(first[:2], p2, Ledger(), time.time())
    led.repair_through = 3
    rep = h.decide(first, p2, led, time.time())
    assert [s.frame_index for s in rep.segments] == [2, 3] and rep.counts.repaired == 2
    assert rep.counts.consumed == 0 and torch.equal(rep.segments[0].positions, out.segments[2].positions)
