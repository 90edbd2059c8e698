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


def test_encode_rejects_float32_tokens():
    s = seg()
    bad = TokenSegment(s.stream_id, 0, 0.0, s.positions, s.tokens.float(), False, s.grid)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        encode_segment(bad)
