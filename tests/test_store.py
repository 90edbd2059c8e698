import torch

from streamdycoke import InMemoryTokenStore, TokenStore
from streamdycoke.segment import TokenSegment


def mk(frame, keyframe, t=None, sid="a"):
    pos = torch.arange(4) if keyframe else torch.tensor([1])
    return TokenSegment(sid, frame, float(frame if t is None else t), pos, torch.ones(len(pos), 2, dtype=torch.float16), keyframe, (2, 2))


def test_in_memory_store_satisfies_protocol():
    assert isinstance(InMemoryTokenStore(), TokenStore)


def test_append_is_idempotent_per_stream_and_frame():
    st = InMemoryTokenStore()
    assert st.append(mk(0, True))
    assert not st.append(mk(0, True))
    assert st.append(mk(0, True, sid="b"))
    assert [s.frame_index for s in st.read("a")] == [0]


def test_time_window_read_starts_at_the_last_keyframe():
    st = InMemoryTokenStore()
    for f in range(10):
        st.append(mk(f, keyframe=f in (0, 4, 8)))
    assert [s.frame_index for s in st.read("a", 5.5, 7.0)] == [4, 5, 6, 7]
    assert [s.frame_index for s in st.read("a", 5.5, 7.0, from_keyframe=False)] == [6, 7]
    assert st.last_frame_index("a") == 9 and st.last_frame_index("zzz") is None


def test_retention_keeps_the_newest_segments():
    st = InMemoryTokenStore(max_segments=3)
    for f in range(6):
        st.append(mk(f, True))
    assert [s.frame_index for s in st.read("a")] == [3, 4, 5]
