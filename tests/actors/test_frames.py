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


# -- property-based: hostile bytes only ever produce the format's own error ----------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _valid_frame(draw_ts: float = 1.5) -> bytes:
    return encode_frame("cam-1", 7, draw_ts, np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3))


def _check(data: bytes) -> None:
    import math

    try:
        msg = decode_frame(data)
    except FrameFormatError as exc:
        assert exc.reason and str(exc)
        return
    # whatever decodes satisfies the reader's invariants
    assert math.isfinite(msg.timestamp) and msg.timestamp >= 0 and msg.camera
    assert msg.rgb.shape == (msg.rgb.shape[0], msg.rgb.shape[1], 3) and msg.rgb.dtype == np.uint8


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_a_frame_format_error(data):
    _check(data)
    _check(b"SDKF\x01\x00" + data)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_frames_never_raise_anything_but_a_frame_format_error(data):
    raw = bytearray(_valid_frame())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    _check(bytes(raw))
    _check(bytes(raw[:cut]))


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 2**64 - 1))
def test_header_fields_of_any_value_are_checked(ts, index):
    import struct
    import zlib

    from actors.frames import FRAME_HEADER

    payload = bytes(12)
    raw = FRAME_HEADER.pack(b"SDKF", 1, 0, 1, index, ts, 2, 2, 12, zlib.crc32(payload)) + b"c" + payload
    _check(raw)
    assert struct.calcsize("<4sBBHQdHHII") == FRAME_HEADER.size
