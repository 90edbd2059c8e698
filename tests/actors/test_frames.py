import numpy as np
import pytest

from actors.frames import (FRAME_HEADER, FRAME_HEADER_V1, FrameFormatError, decode_frame, encode_frame, encode_skip,
                           peek_indices)


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
    (lambda b: b[:4] + bytes([3]) + b[5:], "bad_version"),
    (lambda b: b[:5] + bytes([7]) + b[6:], "bad_pixel_format"),
    (lambda b: b[:5] + bytes([1]) + b[6:], "bad_shape"),  # a skip record with pixels
    (lambda b: b[:-1], "wrong_size"),
    (lambda b: b + b"\0", "wrong_size"),
    (lambda b: b[:-3] + bytes([b[-3] ^ 1]) + b[-2:], "bad_crc"),
    (lambda b: b[:40] + (4).to_bytes(4, "little") + b[44:], "bad_flags"),  # a bit no reader knows
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
    assert 0 <= msg.skipped_before <= msg.frame_index and 0.0 <= msg.pixel_change <= 1.0
    if msg.rgb is not None:
        assert msg.rgb.shape == (msg.rgb.shape[0], msg.rgb.shape[1], 3) and msg.rgb.dtype == np.uint8


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_a_frame_format_error(data):
    _check(data)
    _check(b"SDKF\x01\x00" + data)
    _check(b"SDKF\x02\x00" + data)
    _check(b"SDKF\x02\x01" + data)


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

    payload = bytes(12)
    raw = FRAME_HEADER_V1.pack(b"SDKF", 1, 0, 1, index, ts, 2, 2, 12, zlib.crc32(payload)) + b"c" + payload
    _check(raw)
    assert struct.calcsize("<4sBBHQdHHII") == FRAME_HEADER_V1.size
    for skipped, change in ((0, 0.5), (index % 2**32, ts), (2**32 - 1, -1.0)):
        try:
            raw = FRAME_HEADER.pack(b"SDKF", 2, 0, 1, index, ts, 2, 2, 12, zlib.crc32(payload), skipped, 3,
                                    change) + b"c" + payload
        except (OverflowError, struct.error):  # a float too large for f32: no such message can be written
            continue
        _check(raw)


def test_version_1_messages_are_still_read():
    import zlib

    payload = bytes(range(12))
    raw = FRAME_HEADER_V1.pack(b"SDKF", 1, 0, 1, 5, 2.5, 2, 2, 12, zlib.crc32(payload)) + b"c" + payload
    m = decode_frame(raw)
    assert (m.frame_index, m.skipped_before, m.sampled, m.frames) == (5, 0, False, 1)
    assert m.rgb.tobytes() == payload and peek_indices(raw) == (5, 5)


def test_edge_sampled_frames_and_skip_records_account_for_the_frames_before_them():
    f = frame()
    m = decode_frame(encode_frame("cam", 10, 3.0, f, skipped_before=4, sampled=True, scene_cut=True, pixel_change=0.3))
    assert (m.skipped_before, m.frames, m.sampled, m.scene_cut) == (4, 5, True, True)
    assert abs(m.pixel_change - 0.3) < 1e-6 and np.array_equal(m.rgb, f)
    s = encode_skip("cam", 20, 4.0, skipped_before=8)
    m = decode_frame(s)
    assert m.rgb is None and m.frames == 9 and peek_indices(s) == (12, 20)
    assert len(s) == FRAME_HEADER.size + 3
    with pytest.raises(ValueError, match="skipped_before"):
        encode_skip("cam", 3, 1.0, skipped_before=4)  # more skipped than frames before it


@pytest.mark.parametrize("flags, change", [(0, 0.0), (3, 0.0), (1, 0.25), (1 | 8, 0.0)])
def test_a_skip_record_claims_nothing_but_the_frames_it_skipped(flags, change):
    """A skip record is sampled, not a cut, and measured no change: anything else is a forged one."""
    good = encode_skip("cam", 9, 1.0, skipped_before=3)
    assert decode_frame(good).skipped_before == 3
    forged = good[:40] + flags.to_bytes(4, "little") + FRAME_HEADER.pack(*FRAME_HEADER.unpack_from(good)[:-1], change)[44:48] + good[48:]
    with pytest.raises(FrameFormatError) as exc:
        decode_frame(forged)
    assert exc.value.reason == "bad_flags"
