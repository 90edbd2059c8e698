import numpy as np
import pytest

from actors.frames import FRAME_HEADER, FrameFormatError, decode_frame, encode_frame


def frame(h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_round_trip_is_exact():
    f = frame()
    m = decode_frame(encode_frame("cam-ü", 123456789, 1712.5, f))
    assert (m.camera, m.frame_index, m.timestamp) == ("cam-ü", 123456789, 1712.5)
    assert np.array_equal(m.rgb, f)
    assert len(encode_frame("c", 0, 0.0, f)) == FRAME_HEADER.size + 1 + f.size


@pytest.mark.parametrize("mutate, reason", [
    (lambda b: b[:20], "truncated"),
    (lambda b: b"XXXX" + b[4:], "bad_magic"),
    (lambda b: b[:4] + bytes([2]) + b[5:], "bad_version"),
    (lambda b: b[:5] + bytes([7]) + b[6:], "bad_pixel_format"),
    (lambda b: b[:-1], "wrong_size"),
    (lambda b: b + b"\0", "wrong_size"),
    (lambda b: b[:-3] + bytes([b[-3] ^ 1]) + b[-2:], "bad_crc"),
])
def test_malformed_messages_are_rejected_with_a_reason(mutate, reason):
    data = encode_frame("cam", 1, 0.5, frame())
    with pytest.raises(FrameFormatError) as exc:
        decode_frame(mutate(data))
    assert exc.value.reason == reason


def test_encode_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="uint8"):
        encode_frame("cam", 0, 0.0, np.zeros((4, 4, 3), dtype=np.float32))
