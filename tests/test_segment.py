import struct

import pytest
import torch

from streamdycoke.segment import HEADER, SegmentFormatError, TokenSegment, decode_segment, encode_segment


def seg(k=5, n=16, d=8, dtype=torch.float16, keyframe=False, sid="cam-1"):
    g = torch.Generator().manual_seed(k)
    pos = torch.arange(n) if keyframe else torch.randperm(n, generator=g)[:k].sort().values
    tok = torch.randn(len(pos), d, generator=g).to(dtype)
    return TokenSegment(sid, 123456789012, 1712.25, pos, tok, keyframe, (4, n // 4))


def same(a: TokenSegment, b: TokenSegment) -> bool:
    return (
        (a.stream_id, a.frame_index, a.timestamp, a.keyframe, a.grid) == (b.stream_id, b.frame_index, b.timestamp, b.keyframe, b.grid)
        and torch.equal(a.positions, b.positions) and a.tokens.dtype == b.tokens.dtype
        and torch.equal(a.tokens.view(torch.int16), b.tokens.view(torch.int16))
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k, keyframe", [(5, False), (0, False), (16, True)])
def test_round_trip_is_exact(dtype, k, keyframe):
    s = seg(k=k, dtype=dtype, keyframe=keyframe, sid="caméra/7")
    assert same(decode_segment(encode_segment(s)), s)


def test_size_is_header_plus_int16_positions_plus_half_precision_tokens():
    s = seg(k=5, d=8)
    assert len(encode_segment(s)) == HEADER.size + len("cam-1") + 2 * 5 + 2 * 5 * 8


@pytest.mark.parametrize("cut", [1, 10, HEADER.size, HEADER.size + 3])
def test_rejects_truncated(cut):
    data = encode_segment(seg())
    with pytest.raises(SegmentFormatError, match="truncated"):
        decode_segment(data[:-cut] if cut < len(data) - HEADER.size else data[:cut])


def test_rejects_flipped_payload_byte():
    data = bytearray(encode_segment(seg()))
    data[-3] ^= 0x40
    with pytest.raises(SegmentFormatError, match="CRC"):
        decode_segment(bytes(data))


def test_rejects_bad_magic_version_and_trailing_bytes():
    data = encode_segment(seg())
    with pytest.raises(SegmentFormatError, match="magic"):
        decode_segment(b"XXXX" + data[4:])
    with pytest.raises(SegmentFormatError, match="version"):
        decode_segment(data[:4] + bytes([9]) + data[5:])
    with pytest.raises(SegmentFormatError, match="trailing"):
        decode_segment(data + b"\0")


def test_rejects_unsorted_positions_even_with_valid_crc():
    import zlib

    s = seg(k=3)
    data = bytearray(encode_segment(s))
    off = HEADER.size + len("cam-1")
    data[off:off + 6] = struct.pack("<hhh", 3, 2, 1)
    body = bytes(data[HEADER.size:])
    data[36:40] = struct.pack("<I", zlib.crc32(body))
    with pytest.raises(SegmentFormatError, match="increasing"):
        decode_segment(bytes(data))


@pytest.mark.parametrize("what", ["nan", "inf", "grid", "index", "dim"])
def test_values_a_reader_promises_are_checked_even_with_a_valid_crc(what):
    """Hostile bytes with a correct CRC: token values that are not numbers, a grid int16 positions cannot
    address, a frame index past 2^62, tokens of no dimension. Each is refused by the reader, and the writer
    refuses to write it."""
    import zlib

    gh, gw, k, d, index = 2, 3, 3, 4, 3
    toks = torch.ones(k, d, dtype=torch.float16)
    if what in ("nan", "inf"):
        toks[1, 2] = float(what)
    elif what == "grid":
        gh, gw, k = 200, 200, 0
    elif what == "index":
        index = 2**62
    elif what == "dim":
        d = 0
        toks = torch.ones(k, 0, dtype=torch.float16)
    pos = torch.tensor([0, 2, 5][:k], dtype=torch.int16)
    body = b"cam" + pos.numpy().tobytes() + toks.view(torch.int16).numpy().tobytes()
    data = HEADER.pack(b"SDKT", 1, 0, 3, index, 1.0, gh, gw, k, d, zlib.crc32(body)) + body
    with pytest.raises(SegmentFormatError):
        decode_segment(data)
    with pytest.raises(ValueError):
        encode_segment(TokenSegment("cam", index, 1.0, pos.long(), toks, False, (gh, gw)))


def test_encode_rejects_float32_tokens():
    s = seg()
    bad = TokenSegment(s.stream_id, 0, 0.0, s.positions, s.tokens.float(), False, s.grid)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        encode_segment(bad)


# -- property-based: hostile bytes only ever produce the format's own error ----------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from streamdycoke.segment import (SegmentFormatError, TokenSegment, decode_segment, encode_segment,  # noqa: E402
                                  read_header, read_positions)


def _valid_segment() -> bytes:
    return encode_segment(TokenSegment("cam", 3, 2.5, torch.tensor([0, 2, 5]), torch.ones(3, 4, dtype=torch.float16),
                                       False, (2, 3)))


def _check(data: bytes) -> None:
    import math

    try:  # the positions alone: the format's own error or the positions, never anything else
        positions = read_positions(data)
    except SegmentFormatError as exc:
        assert str(exc)
        positions = None
    try:
        seg = decode_segment(data)
    except SegmentFormatError as exc:
        assert str(exc)
        return
    assert positions is not None and torch.equal(positions, seg.positions)  # what decode accepts, it reads alike
    assert math.isfinite(seg.timestamp) and seg.timestamp >= 0
    n = seg.grid[0] * seg.grid[1]
    assert 0 < n <= 32767 and seg.num_kept <= n and seg.tokens.shape == (seg.num_kept, seg.dim) and seg.dim >= 1
    assert 0 <= seg.frame_index < 2**62 and bool(torch.isfinite(seg.tokens).all())
    if seg.num_kept:
        assert int(seg.positions.min()) >= 0 and int(seg.positions.max()) < n
        assert bool((seg.positions[1:] > seg.positions[:-1]).all())
    assert read_header(data).num_kept == seg.num_kept


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_a_segment_format_error(data):
    _check(data)
    _check(b"SDKT\x01\x00" + data)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_segments_never_raise_anything_but_a_segment_format_error(data):
    raw = bytearray(_valid_segment())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    _check(bytes(raw))
    _check(bytes(raw[: data.draw(st.integers(0, len(raw)))]))


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
       st.integers(0, 40), st.integers(0, 8), st.integers(0, 7))
def test_header_fields_of_any_value_are_checked(ts, gh, gw, k, d, flags):
    """A header with any field values, and a body consistent with its lengths and CRC: checked, never crashing."""
    import zlib

    from streamdycoke.segment import HEADER

    body = b"s" + bytes(2 * k) + bytes(2 * k * d)
    _check(HEADER.pack(b"SDKT", 1, flags, 1, 9, ts, gh, gw, k, d, zlib.crc32(body)) + body)
