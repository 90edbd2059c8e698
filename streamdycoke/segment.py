"""What a compressed stream is made of: :class:`TokenSegment`, its wire format, and reconstruction.

Wire format, version 1 (all integers little-endian; no pickle anywhere)::

    offset  size     field
    0       4        magic  b"SDKT"
    4       1        version (1)
    5       1        flags: bit 0 keyframe; bits 1-2 token dtype (0 float16, 1 bfloat16)
    6       2        L, byte length of the UTF-8 stream id
    8       8        frame index (u64)
    16      8        capture timestamp in seconds (f64)
    24      2        grid height H (u16)
    26      2        grid width W (u16); a frame has N = H * W token positions
    28      4        K, kept tokens (u32)
    32      4        D, token dimension (u32)
    36      4        CRC-32 (zlib) of every byte after the header
    40      L        stream id
    40+L    2K       kept positions, int16, strictly increasing, each in [0, N)
    40+L+2K 2KD      kept tokens, row-major, in the flagged dtype

A keyframe holds all N positions. Decoding checks the magic, version, length, CRC, positions,
keyframe count, a finite non-negative timestamp, a frame index below 2^62, a non-empty grid of at most
32,767 positions (what int16 positions address), a token dimension of at least 1 and finite token
values, and raises :class:`SegmentFormatError` naming what is wrong; encoding refuses what decoding would.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Iterable

import torch

__all__ = [
    "FORMAT_VERSION",
    "HEADER",
    "SegmentFormatError",
    "SegmentHeader",
    "TokenSegment",
    "apply_segment",
    "decode_segment",
    "encode_segment",
    "fidelity",
    "read_header",
    "read_positions",
    "reconstruct",
]

MAGIC = b"SDKT"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sBBHQdHHIII")
_DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1}
_CODE_DTYPES = {v: k for k, v in _DTYPE_CODES.items()}
_MAX_POSITIONS = 32767  # int16 positions
_MAX_FRAME_INDEX = 1 << 62  # as the frame format: far past any stream, and safe in a signed 64-bit integer


class SegmentFormatError(ValueError):
    """Bytes that are not a valid serialised :class:`TokenSegment`."""


@dataclass(frozen=True)
class TokenSegment:
    """The differential tokens one processed frame adds to a stream.

    Attributes:
        stream_id: camera / stream identifier.
        frame_index: index of the frame in its stream (ingest order).
        timestamp: capture time in seconds.
        positions: ``(K,)`` long, kept patch positions, strictly increasing, in ``[0, H*W)``.
        tokens: ``(K, D)`` float16 or bfloat16, the kept tokens.
        keyframe: whether the frame was kept whole (then ``K == H*W``).
        grid: ``(H, W)`` token grid of a frame.
    """

    stream_id: str
    frame_index: int
    timestamp: float
    positions: torch.Tensor
    tokens: torch.Tensor
    keyframe: bool
    grid: tuple[int, int]

    @property
    def num_positions(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_kept(self) -> int:
        return int(self.positions.shape[0])

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])


def encode_segment(seg: TokenSegment) -> bytes:
    """Serialise a segment to the version-1 wire format (see module docstring)."""
    if seg.tokens.dtype not in _DTYPE_CODES:
        raise ValueError(f"tokens must be float16 or bfloat16, got {seg.tokens.dtype}")
    n = seg.num_positions
    if n > _MAX_POSITIONS:
        raise ValueError(f"grid {seg.grid} has {n} positions; int16 positions allow {_MAX_POSITIONS}")
    k = seg.num_kept
    if seg.tokens.dim() != 2 or seg.tokens.shape[0] != k:
        raise ValueError(f"tokens {tuple(seg.tokens.shape)} do not match {k} positions")
    if not (math.isfinite(seg.timestamp) and seg.timestamp >= 0):
        raise ValueError(f"timestamp must be finite and >= 0, got {seg.timestamp}")
    if seg.num_positions == 0:
        raise ValueError(f"empty grid {seg.grid}")
    if not 0 <= seg.frame_index < _MAX_FRAME_INDEX:
        raise ValueError(f"frame index {seg.frame_index} outside [0, 2^62)")
    if seg.dim < 1:
        raise ValueError(f"token dimension {seg.dim}: must be at least 1")
    if k and not bool(torch.isfinite(seg.tokens).all()):
        raise ValueError("tokens must be finite (NaN or infinity found)")
    sid = seg.stream_id.encode("utf-8")
    if len(sid) > 0xFFFF:
        raise ValueError("stream id longer than 65535 bytes")
    body = (
        sid
        + seg.positions.to(torch.int16).contiguous().numpy().tobytes()
        + seg.tokens.contiguous().view(torch.int16).numpy().tobytes()
    )
    flags = int(seg.keyframe) | (_DTYPE_CODES[seg.tokens.dtype] << 1)
    header = HEADER.pack(
        MAGIC, FORMAT_VERSION, flags, len(sid), seg.frame_index, seg.timestamp,
        seg.grid[0], seg.grid[1], k, seg.dim, zlib.crc32(body),
    )
    return header + body


@dataclass(frozen=True)
class SegmentHeader:
    """The fixed-size header of a serialised segment (read without decoding the body)."""

    keyframe: bool
    dtype: torch.dtype
    stream_id_bytes: int
    frame_index: int
    timestamp: float
    grid: tuple[int, int]
    num_kept: int
    dim: int
    crc: int

    @property
    def body_bytes(self) -> int:
        return self.stream_id_bytes + 2 * self.num_kept + 2 * self.num_kept * self.dim


def read_header(data: bytes | bytearray | memoryview) -> SegmentHeader:
    """The header of serialised segment bytes; :class:`SegmentFormatError` if it is not a valid one.

    Cheap (no copy of the body): for callers that need a segment's size or kept count, not its tokens.
    """
    if len(data) < HEADER.size:
        raise SegmentFormatError(f"truncated: {len(data)} bytes, header needs {HEADER.size}")
    magic, version, flags, sid_len, frame_index, timestamp, gh, gw, k, d, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SegmentFormatError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise SegmentFormatError(f"unsupported format version {version} (this reader knows {FORMAT_VERSION})")
    code = (flags >> 1) & 0b11
    if code not in _CODE_DTYPES or flags >> 3:
        raise SegmentFormatError(f"bad flags 0x{flags:02x}")
    if not (math.isfinite(timestamp) and timestamp >= 0):
        raise SegmentFormatError(f"timestamp {timestamp} is not a finite, non-negative number")
    if gh == 0 or gw == 0:
        raise SegmentFormatError(f"empty grid {gh}x{gw}")
    if gh * gw > _MAX_POSITIONS:
        raise SegmentFormatError(f"grid {gh}x{gw} has {gh * gw} positions; int16 positions address {_MAX_POSITIONS}")
    if frame_index >= _MAX_FRAME_INDEX:
        raise SegmentFormatError(f"frame index {frame_index} is not below 2^62")
    if d == 0:
        raise SegmentFormatError("token dimension 0")
    return SegmentHeader(bool(flags & 1), _CODE_DTYPES[code], sid_len, frame_index, timestamp, (gh, gw), k, d, crc)


def read_positions(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """The kept positions ``(K,)`` long of serialised segment bytes, checked as :func:`decode_segment`
    checks them (header, length, CRC, order) without copying the tokens: for callers that show what a
    frame kept, not what it holds."""
    h = read_header(data)
    expected = HEADER.size + h.body_bytes
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes"
        raise SegmentFormatError(f"{kind}: {len(data)} bytes, header says {expected}")
    view = memoryview(data)[HEADER.size:]
    if zlib.crc32(view) != h.crc:
        raise SegmentFormatError("CRC mismatch: segment bytes are corrupt")
    k, n = h.num_kept, h.grid[0] * h.grid[1]
    if k > n or (h.keyframe and k != n):
        raise SegmentFormatError(f"{k} kept tokens for a {h.grid[0]}x{h.grid[1]} grid (keyframe={h.keyframe})")
    off = h.stream_id_bytes
    if not k:
        return torch.zeros(0, dtype=torch.long)
    positions = torch.frombuffer(bytearray(view[off:off + 2 * k]), dtype=torch.int16).long()
    if positions[0] < 0 or positions[-1] >= n or bool((positions[1:] <= positions[:-1]).any()):
        raise SegmentFormatError("positions must be strictly increasing and inside the grid")
    return positions


def decode_segment(data: bytes | bytearray | memoryview) -> TokenSegment:
    """Parse bytes written by :func:`encode_segment`; raise :class:`SegmentFormatError` if invalid."""
    data = bytes(data)
    h = read_header(data)
    sid_len, frame_index, timestamp, (gh, gw), k, d, crc = (
        h.stream_id_bytes, h.frame_index, h.timestamp, h.grid, h.num_kept, h.dim, h.crc)
    expected = HEADER.size + h.body_bytes
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes"
        raise SegmentFormatError(f"{kind}: {len(data)} bytes, header says {expected}")
    body = data[HEADER.size:]
    if zlib.crc32(body) != crc:
        raise SegmentFormatError("CRC mismatch: segment bytes are corrupt")
    n = gh * gw
    keyframe = h.keyframe
    if k > n or (keyframe and k != n):
        raise SegmentFormatError(f"{k} kept tokens for a {gh}x{gw} grid (keyframe={keyframe})")
    try:
        stream_id = body[:sid_len].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SegmentFormatError(f"stream id is not UTF-8: {exc}") from None
    off = sid_len
    positions = torch.frombuffer(bytearray(body[off:off + 2 * k]), dtype=torch.int16).long() if k else torch.zeros(0, dtype=torch.long)
    off += 2 * k
    if k and (positions[0] < 0 or positions[-1] >= n or bool((positions[1:] <= positions[:-1]).any())):
        raise SegmentFormatError("positions must be strictly increasing and inside the grid")
    raw = bytearray(body[off:])
    tokens = (torch.frombuffer(raw, dtype=torch.int16) if raw else torch.zeros(0, dtype=torch.int16))
    tokens = tokens.view(h.dtype).reshape(k, d)
    if k and not bool(torch.isfinite(tokens).all()):
        raise SegmentFormatError("tokens hold NaN or infinity")
    return TokenSegment(stream_id, frame_index, timestamp, positions, tokens, keyframe, (gh, gw))


def apply_segment(held: torch.Tensor | None, seg: TokenSegment) -> torch.Tensor:
    """The ``(N, D)`` float32 tokens a stream holds after ``seg``, given those held before it
    (``None`` at the start of a read). A new tensor; ``held`` is not modified."""
    shape = (seg.num_positions, seg.dim)
    if held is None or tuple(held.shape) != shape:
        if not seg.keyframe:
            raise ValueError(
                f"frame {seg.frame_index} is not a keyframe: reconstruction must start at one, "
                "and the grid or dim may change only at one"
            )
        out = torch.empty(shape)
    else:
        out = held.clone()
    out[seg.positions] = seg.tokens.float()
    return out


def reconstruct(segments: Iterable[TokenSegment]) -> torch.Tensor:
    """The token the compressed stream holds for every (frame, position).

    Args:
        segments: one stream's segments in frame order; the first must be a keyframe.

    Returns:
        ``(T, N, D)`` float32: for each frame, each position's most recently kept token.
    """
    frames: list[torch.Tensor] = []
    held: torch.Tensor | None = None
    for seg in segments:
        held = apply_segment(held, seg)
        frames.append(held)
    if not frames:
        raise ValueError("no segments to reconstruct")
    return torch.stack(frames)


def fidelity(original: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """Mean cosine similarity between every original token and its reconstruction.

    Args:
        original: ``(T, N, D)``.
        reconstruction: ``(T, N, D)``.
    """
    if original.shape != reconstruction.shape:
        raise ValueError(f"shapes differ: {tuple(original.shape)} vs {tuple(reconstruction.shape)}")
    cos = torch.nn.functional.cosine_similarity(original.float(), reconstruction.float(), dim=-1)
    return float(cos.mean())
