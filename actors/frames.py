"""The frame message on Kafka: one decoded camera frame, versioned binary, no pickle.

Version 1 (all integers little-endian)::

    offset  size   field
    0       4      magic b"SDKF"
    4       1      version (1)
    5       1      pixel format (0 = rgb24, H x W x 3 bytes, row-major)
    6       2      L, byte length of the UTF-8 camera id
    8       8      frame index (u64), per camera, from 0 in ingest order
    16      8      capture timestamp in seconds (f64)
    24      2      height H (u16)
    26      2      width W (u16)
    28      4      payload length (u32) = H * W * 3
    32      4      CRC-32 (zlib) of the payload
    36      L      camera id
    36+L    ...    pixels

Anything else is rejected with :class:`FrameFormatError` naming the reason, which is what goes into
the dead-letter record. A decoded message satisfies: a finite, non-negative capture timestamp; a frame
index below 2**62; a non-empty UTF-8 camera id; a payload of exactly ``H * W * 3`` bytes with its CRC.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["FRAME_HEADER", "FrameFormatError", "FrameMessage", "decode_frame", "encode_frame"]

MAGIC = b"SDKF"
VERSION = 1
PIXEL_FORMATS = {0: "rgb24"}
FRAME_HEADER = struct.Struct("<4sBBHQdHHII")
MAX_FRAME_INDEX = 2**62  # far beyond any stream; keeps indices exact as floats and JSON numbers


class FrameFormatError(ValueError):
    """Bytes that are not a valid frame message; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class FrameMessage:
    camera: str
    frame_index: int
    timestamp: float
    rgb: np.ndarray  # (H, W, 3) uint8, read-only view of the message bytes


def encode_frame(camera: str, frame_index: int, timestamp: float, rgb: np.ndarray) -> bytes:
    """Serialise one ``(H, W, 3)`` uint8 RGB frame."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape
    if not (math.isfinite(timestamp) and timestamp >= 0):
        raise ValueError(f"timestamp must be finite and >= 0, got {timestamp}")
    if not 0 <= frame_index < MAX_FRAME_INDEX:
        raise ValueError(f"frame index must be in [0, 2**62), got {frame_index}")
    cam = camera.encode("utf-8")
    payload = np.ascontiguousarray(rgb).tobytes()
    header = FRAME_HEADER.pack(MAGIC, VERSION, 0, len(cam), frame_index, timestamp, h, w, len(payload),
                               zlib.crc32(payload))
    return header + cam + payload


def decode_frame(data: bytes | memoryview) -> FrameMessage:
    """Parse a frame message; raise :class:`FrameFormatError` (``.reason``) if it is not one."""
    if len(data) < FRAME_HEADER.size:
        raise FrameFormatError("truncated", f"{len(data)} bytes, header needs {FRAME_HEADER.size}")
    magic, version, fmt, cam_len, index, ts, h, w, n, crc = FRAME_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameFormatError("bad_magic", f"{magic!r}")
    if version != VERSION:
        raise FrameFormatError("bad_version", f"version {version}, this reader knows {VERSION}")
    if fmt not in PIXEL_FORMATS:
        raise FrameFormatError("bad_pixel_format", f"pixel format {fmt}")
    if not (math.isfinite(ts) and ts >= 0):
        raise FrameFormatError("bad_timestamp", f"capture timestamp {ts} is not a finite, non-negative number")
    if index >= MAX_FRAME_INDEX:
        raise FrameFormatError("bad_frame_index", f"frame index {index} is not below 2**62")
    if cam_len == 0:
        raise FrameFormatError("bad_camera_id", "empty camera id")
    if n != h * w * 3 or h == 0 or w == 0:
        raise FrameFormatError("bad_shape", f"{h}x{w}x3 needs {h * w * 3} bytes, header says {n}")
    if len(data) != FRAME_HEADER.size + cam_len + n:
        raise FrameFormatError("wrong_size", f"{len(data)} bytes, header says {FRAME_HEADER.size + cam_len + n}")
    off = FRAME_HEADER.size
    try:
        camera = bytes(data[off:off + cam_len]).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameFormatError("bad_camera_id", "camera id is not UTF-8") from None
    payload = memoryview(data)[off + cam_len:]
    if zlib.crc32(payload) != crc:
        raise FrameFormatError("bad_crc", "pixel payload is corrupt")
    rgb = np.frombuffer(payload, dtype=np.uint8).reshape(h, w, 3)
    return FrameMessage(camera, index, ts, rgb)
