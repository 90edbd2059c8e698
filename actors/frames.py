"""The frame message on Kafka: one decoded camera frame, or a run of frames ingest skipped, versioned
binary, no pickle.

Version 2 (all integers little-endian)::

    offset  size   field
    0       4      magic b"SDKF"
    4       1      version (2)
    5       1      pixel format: 0 = rgb24 (H x W x 3 bytes, row-major); 1 = none (a skip record: H = W = 0)
    6       2      L, byte length of the UTF-8 camera id
    8       8      frame index (u64), per camera, from 0 in ingest order, without gaps
    16      8      capture timestamp in seconds (f64)
    24      2      height H (u16)
    26      2      width W (u16)
    28      4      payload length (u32) = H * W * 3
    32      4      CRC-32 (zlib) of the payload
    36      4      skipped before (u32): frames index - K .. index - 1 were ingested and skipped by ingest's
                   frame sampler (never sent); a skip record's own index is skipped too
    40      4      flags (u32): bit 0 SAMPLED (ingest's sampler chose this frame: process it, do not sample
                   again), bit 1 SCENE_CUT (that sampler saw a cut)
    44      4      pixel change (f32) the sampler measured against the last frame it chose
    48      L      camera id
    48+L    ...    pixels

Version 1 (the first 36 bytes above, then the camera id and pixels; nothing skipped, not sampled) is
still read. Anything else is rejected with :class:`FrameFormatError` naming the reason, which is what
goes into the dead-letter record. A decoded message satisfies: a finite, non-negative capture
timestamp; a frame index below 2**62 and at least its skipped-before count; a pixel change in [0, 1];
no flag bits but SAMPLED and SCENE_CUT (a skip record: SAMPLED alone, change 0); a non-empty UTF-8
camera id; a payload of exactly ``H * W * 3`` bytes with its CRC (none for a skip record).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["FLAG_SAMPLED", "FLAG_SCENE_CUT", "FRAME_HEADER", "FRAME_HEADER_V1", "FrameFormatError", "FrameMessage",
           "decode_frame", "encode_frame", "encode_skip", "is_skip_record", "peek_indices"]

MAGIC = b"SDKF"
VERSION = 2
PIXEL_FORMATS = {0: "rgb24", 1: "none"}
FRAME_HEADER_V1 = struct.Struct("<4sBBHQdHHII")
FRAME_HEADER = struct.Struct("<4sBBHQdHHIIIIf")
MAX_FRAME_INDEX = 2**62  # far beyond any stream; keeps indices exact as floats and JSON numbers
FLAG_SAMPLED = 1
FLAG_SCENE_CUT = 2


class FrameFormatError(ValueError):
    """Bytes that are not a valid frame message; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class FrameMessage:
    """One message: a frame (``rgb``) or a skip record (``rgb`` None), with the frames skipped before it."""

    camera: str
    frame_index: int
    timestamp: float
    rgb: np.ndarray | None  # (H, W, 3) uint8, read-only view of the message bytes; None for a skip record
    skipped_before: int = 0
    flags: int = 0
    pixel_change: float = 0.0

    @property
    def sampled(self) -> bool:
        return bool(self.flags & FLAG_SAMPLED)

    @property
    def scene_cut(self) -> bool:
        return bool(self.flags & FLAG_SCENE_CUT)

    @property
    def frames(self) -> int:
        """Ingested frames this message accounts for."""
        return self.skipped_before + 1


def _check_meta(camera: str, frame_index: int, timestamp: float, skipped_before: int) -> bytes:
    if not (math.isfinite(timestamp) and timestamp >= 0):
        raise ValueError(f"timestamp must be finite and >= 0, got {timestamp}")
    if not 0 <= frame_index < MAX_FRAME_INDEX:
        raise ValueError(f"frame index must be in [0, 2**62), got {frame_index}")
    if not 0 <= skipped_before <= min(frame_index, 2**32 - 1):
        raise ValueError(f"skipped_before must be in [0, frame index], got {skipped_before}")
    return camera.encode("utf-8")


def encode_frame(camera: str, frame_index: int, timestamp: float, rgb: np.ndarray, *, skipped_before: int = 0,
                 sampled: bool = False, scene_cut: bool = False, pixel_change: float = 0.0) -> bytes:
    """Serialise one ``(H, W, 3)`` uint8 RGB frame; ``skipped_before`` frames just before it were skipped
    by ingest's sampler, which chose this one when ``sampled``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape
    cam = _check_meta(camera, frame_index, timestamp, skipped_before)
    payload = np.ascontiguousarray(rgb).tobytes()
    flags = (FLAG_SAMPLED if sampled else 0) | (FLAG_SCENE_CUT if scene_cut else 0)
    header = FRAME_HEADER.pack(MAGIC, VERSION, 0, len(cam), frame_index, timestamp, h, w, len(payload),
                               zlib.crc32(payload), skipped_before, flags, pixel_change)
    return header + cam + payload


def encode_skip(camera: str, frame_index: int, timestamp: float, skipped_before: int = 0) -> bytes:
    """A skip record: frames ``frame_index - skipped_before .. frame_index`` were ingested and skipped by
    ingest's sampler (``timestamp``: the last one's capture time)."""
    cam = _check_meta(camera, frame_index, timestamp, skipped_before)
    return FRAME_HEADER.pack(MAGIC, VERSION, 1, len(cam), frame_index, timestamp, 0, 0, 0, zlib.crc32(b""),
                             skipped_before, FLAG_SAMPLED, 0.0) + cam


def peek_indices(value: bytes | None) -> tuple[int, int] | None:
    """The first and last frame index a message claims to account for, if its header can be read (the
    full checks are :func:`decode_frame`'s)."""
    if value is None or len(value) < FRAME_HEADER_V1.size or value[:4] != MAGIC:
        return None
    index = FRAME_HEADER_V1.unpack_from(value)[4]
    if value[4] == VERSION and len(value) >= FRAME_HEADER.size:
        skipped = FRAME_HEADER.unpack_from(value)[10]
        return max(0, index - skipped), index
    return index, index


def is_skip_record(value: bytes | None) -> bool:
    """Whether a message is a skip record (pixel format "none": frames skipped at the edge, none sent); the
    full checks are :func:`decode_frame`'s."""
    return value is not None and len(value) >= FRAME_HEADER_V1.size and value[:4] == MAGIC and value[5] == 1


def decode_frame(data: bytes | memoryview) -> FrameMessage:
    """Parse a frame message; raise :class:`FrameFormatError` (``.reason``) if it is not one."""
    if len(data) < FRAME_HEADER_V1.size:
        raise FrameFormatError("truncated", f"{len(data)} bytes, header needs {FRAME_HEADER_V1.size}")
    version = data[4]
    if bytes(data[:4]) != MAGIC:
        raise FrameFormatError("bad_magic", f"{bytes(data[:4])!r}")
    if version == 1:
        header = FRAME_HEADER_V1
        magic, version, fmt, cam_len, index, ts, h, w, n, crc = header.unpack_from(data)
        skipped, flags, change = 0, 0, 0.0
    elif version == VERSION:
        header = FRAME_HEADER
        if len(data) < header.size:
            raise FrameFormatError("truncated", f"{len(data)} bytes, header needs {header.size}")
        magic, version, fmt, cam_len, index, ts, h, w, n, crc, skipped, flags, change = header.unpack_from(data)
    else:
        raise FrameFormatError("bad_version", f"version {version}, this reader knows 1 and {VERSION}")
    if fmt not in PIXEL_FORMATS or (version == 1 and fmt != 0):
        raise FrameFormatError("bad_pixel_format", f"pixel format {fmt}")
    if not (math.isfinite(ts) and ts >= 0):
        raise FrameFormatError("bad_timestamp", f"capture timestamp {ts} is not a finite, non-negative number")
    if index >= MAX_FRAME_INDEX:
        raise FrameFormatError("bad_frame_index", f"frame index {index} is not below 2**62")
    if skipped > index:
        raise FrameFormatError("bad_frame_index", f"{skipped} frames skipped before frame {index}")
    if not (math.isfinite(change) and 0.0 <= change <= 1.0):
        raise FrameFormatError("bad_pixel_change", f"pixel change {change} is not in [0, 1]")
    if cam_len == 0:
        raise FrameFormatError("bad_camera_id", "empty camera id")
    if flags & ~(FLAG_SAMPLED | FLAG_SCENE_CUT):
        raise FrameFormatError("bad_flags", f"flags 0x{flags:x} set bits this reader does not know")
    if fmt == 1:
        if h or w or n:
            raise FrameFormatError("bad_shape", f"a skip record carries no pixels, header says {h}x{w}, {n} bytes")
        if flags != FLAG_SAMPLED or change != 0.0:
            raise FrameFormatError("bad_flags", f"a skip record is sampled, not a scene cut, and measured no "
                                                f"change; it says flags 0x{flags:x}, pixel change {change}")
    elif n != h * w * 3 or h == 0 or w == 0:
        raise FrameFormatError("bad_shape", f"{h}x{w}x3 needs {h * w * 3} bytes, header says {n}")
    if len(data) != header.size + cam_len + n:
        raise FrameFormatError("wrong_size", f"{len(data)} bytes, header says {header.size + cam_len + n}")
    off = header.size
    try:
        camera = bytes(data[off:off + cam_len]).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameFormatError("bad_camera_id", "camera id is not UTF-8") from None
    payload = memoryview(data)[off + cam_len:]
    if zlib.crc32(payload) != crc:
        raise FrameFormatError("bad_crc", "pixel payload is corrupt")
    rgb = np.frombuffer(payload, dtype=np.uint8).reshape(h, w, 3) if fmt == 0 else None
    return FrameMessage(camera, index, ts, rgb, skipped, flags, float(change))
