"""Video I/O with PyAV: decode a file or URL to RGB frames, and make a synthetic camera video."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DecodedFrame", "DecodeStats", "SourceFrame", "decode_frames", "decode_video", "make_camera_video", "probe"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedFrame:
    index: int          # decode order within the source, from 0
    timestamp: float    # presentation time in seconds
    rgb: np.ndarray     # (H, W, 3) uint8


@dataclass
class DecodeStats:
    frames: int = 0
    corrupt_packets: int = 0


def probe(source: str) -> dict:
    """Frame count (estimate), rate and size of a source's first video stream."""
    with av.open(source) as c:
        s = c.streams.video[0]
        rate = float(s.average_rate or s.guessed_rate or 30)
        frames = s.frames or (int(float(c.duration) / 1e6 * rate) if c.duration else 0)
        return {"frames": frames, "fps": rate, "width": s.codec_context.width, "height": s.codec_context.height}


class SourceFrame:
    """One decoded frame before any conversion: ingest converts only what it needs (a grey thumbnail of
    every frame for the sampler, RGB at the model's size only for the frames it sends).

    Attributes:
        index: decode order within the source, from 0.
        timestamp: presentation time in seconds.
        decode_s: seconds the decoder spent on this frame (its packets' decode, shared out over the
            frames they gave).
    """

    __slots__ = ("index", "timestamp", "decode_s", "_frame")

    def __init__(self, index: int, timestamp: float, decode_s: float, frame: "av.VideoFrame") -> None:
        self.index, self.timestamp, self.decode_s, self._frame = index, timestamp, decode_s, frame

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` as decoded."""
        return self._frame.height, self._frame.width

    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB, resized to ``size = (height, width)`` while converting (libswscale)."""
        if size is None:
            return self._frame.to_ndarray(format="rgb24")
        return self._frame.to_ndarray(format="rgb24", width=size[1], height=size[0])

    def grey(self) -> np.ndarray:
        """``(H, W)`` uint8 luma at the decoded size (converted by libswscale)."""
        return self._frame.to_ndarray(format="gray")

    def thumbnail(self, size: int = 32) -> np.ndarray:
        """The frame sampler's ``(size, size)`` float32 grey thumbnail in [0, 1]
        (:func:`streamdycoke.sampler.thumbnail`), read straight from the decoder's luma plane where the
        format has one (no conversion of the frame), with limited-range luma (16..235) stretched to full
        range."""
        from .sampler import thumbnail

        fr = self._frame
        name = fr.format.name
        if not (name.startswith(("yuv", "yuvj", "nv12", "nv21")) and fr.format.components[0].bits == 8):
            return thumbnail(self.grey(), size)
        plane = fr.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(fr.height, plane.line_size)[:, : fr.width]
        thumb = thumbnail(luma, size)
        if not name.startswith("yuvj") and str(getattr(fr, "color_range", "")) not in ("2", "JPEG", "ColorRange.JPEG"):
            thumb = np.clip((thumb * 255.0 - 16.0) / 219.0, 0.0, 1.0)
        return thumb


def decode_video(
    source: str,
    stats: DecodeStats | None = None,
    options: dict[str, str] | None = None,
    timeout: float | tuple[float, float] | None = None,
) -> Iterator[SourceFrame]:
    """Decode ``source`` (file path or URL PyAV opens) to :class:`SourceFrame` s, converting nothing.

    Args:
        stats: counters updated as decoding goes (corrupt packets are counted and skipped).
        options: FFmpeg options for opening (e.g. ``{"rtsp_transport": "tcp"}``).
        timeout: seconds to wait for data before giving up (a stalled live source raises instead of
            hanging), or ``(open timeout, read timeout)``; None waits forever.
    """
    stats = stats if stats is not None else DecodeStats()
    with av.open(source, options=options or {}, timeout=timeout) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base) if stream.time_base else 1 / 30
        rate = float(stream.average_rate or 30)
        index = 0
        for packet in container.demux(stream):
            t0 = time.perf_counter()
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:  # corrupt packet: count it, keep the stream going
                stats.corrupt_packets += 1
                log.warning("corrupt packet in %s skipped: %s", source, exc)
                continue
            dt = (time.perf_counter() - t0) / max(1, len(frames))
            for frame in frames:
                ts = frame.pts * tb if frame.pts is not None else index / rate
                stats.frames += 1
                yield SourceFrame(index, float(ts), dt, frame)
                index += 1


def decode_frames(
    source: str,
    size: tuple[int, int] | None = None,
    stats: DecodeStats | None = None,
    options: dict[str, str] | None = None,
    timeout: float | tuple[float, float] | None = None,
) -> Iterator[DecodedFrame]:
    """Decode ``source`` to RGB frames (:func:`decode_video`, every frame converted).

    Args:
        size: ``(height, width)`` to resize to while converting (libswscale), or None for native.
        stats, options, timeout: as :func:`decode_video`.
    """
    for fr in decode_video(source, stats, options, timeout):
        yield DecodedFrame(fr.index, fr.timestamp, fr.rgb(size))


def _smooth_noise(gen: torch.Generator, h: int, w: int, cells: int, channels: int = 3) -> torch.Tensor:
    """Low-frequency texture ``(channels, h, w)`` in [0, 1]."""
    base = torch.rand(1, channels, cells, max(2, cells * w // h), generator=gen)
    return F.interpolate(base, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _background(gen: torch.Generator, h: int, w: int) -> torch.Tensor:
    """A street-like still scene ``(3, h, w)`` in [0, 1]: sky gradient, buildings, texture, ground."""
    y = torch.linspace(0, 1, h).view(1, h, 1)
    sky = torch.tensor([0.55, 0.7, 0.9]).view(3, 1, 1) * (1 - 0.4 * y)
    img = sky.expand(3, h, w).clone()
    horizon = int(h * (0.45 + 0.15 * float(torch.rand(1, generator=gen))))
    x0 = 0
    while x0 < w:  # buildings along the horizon
        bw = int(w * (0.08 + 0.15 * float(torch.rand(1, generator=gen))))
        bh = int(horizon * (0.3 + 0.6 * float(torch.rand(1, generator=gen))))
        color = 0.2 + 0.6 * torch.rand(3, 1, 1, generator=gen)
        img[:, horizon - bh: horizon, x0: x0 + bw] = color
        for wy in range(horizon - bh + 4, horizon - 6, 10):  # windows
            img[:, wy: wy + 4, x0 + 3: x0 + bw - 3: 8] = 0.9 * float(torch.rand(1, generator=gen))
        x0 += bw + int(4 * float(torch.rand(1, generator=gen)))
    ground = 0.3 + 0.2 * _smooth_noise(gen, h - horizon, w, 6)
    img[:, horizon:] = ground
    img = 0.85 * img + 0.15 * _smooth_noise(gen, h, w, 24)
    return img.clamp(0, 1)


def write_video(path: str | Path, frames, fps: float, crf: int = 23) -> Path:
    """Write ``(H, W, 3)`` uint8 RGB frames as an H.264 file at ``fps``; returns the path."""
    from fractions import Fraction

    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = None
        for arr in frames:
            if stream is None:
                stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                stream.height, stream.width = arr.shape[:2]
                stream.pix_fmt, stream.options = "yuv420p", {"crf": str(crf), "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                out.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return path


def make_camera_video(
    path: str | Path,
    *,
    seconds: float = 10.0,
    fps: int = 30,
    size: tuple[int, int] = (240, 320),
    movers: int = 4,
    cuts: int = 0,
    seed: int = 0,
    noise: float = 1.5,
) -> Path:
    """Write a synthetic fixed-camera H.264 video: a still street scene, a few textured objects
    moving across it (some stopping a while), slow light drift, sensor noise, and ``cuts`` hard
    cuts to another scene. Deterministic for a seed.

    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    total = int(seconds * fps)
    scenes = [_background(gen, h, w) for _ in range(cuts + 1)]
    cut_at = sorted(int(total * (i + 1) / (cuts + 1)) for i in range(cuts))

    def new_mover() -> dict:
        mh = int(h * (0.08 + 0.2 * float(torch.rand(1, generator=gen))))
        mw = int(mh * (0.5 + 1.5 * float(torch.rand(1, generator=gen))))
        speed = (15 + 70 * float(torch.rand(1, generator=gen))) * (1 if torch.rand(1, generator=gen) < 0.5 else -1)
        tex = 0.25 + 0.6 * _smooth_noise(gen, mh, mw, 3) * (0.5 + torch.rand(3, 1, 1, generator=gen))
        return {
            "tex": tex.clamp(0, 1), "x": -mw if speed > 0 else w, "y": int((h - mh) * (0.45 + 0.5 * float(torch.rand(1, generator=gen)))),
            "v": speed, "pause_at": float(torch.rand(1, generator=gen)) * w, "pause": int(fps * 2 * float(torch.rand(1, generator=gen))),
            "start": int(total * float(torch.rand(1, generator=gen)) * 0.6),
        }

    objs = [new_mover() for _ in range(movers)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for t in range(total):
            scene = scenes[sum(t >= c for c in cut_at)]
            light = 1.0 + 0.06 * math.sin(2 * math.pi * t / (fps * 7.0))
            img = scene.clone()
            for i, o in enumerate(objs):
                if t < o["start"]:
                    continue
                mh, mw = o["tex"].shape[1:]
                xi = int(o["x"])
                x_a, x_b = max(0, xi), min(w, xi + mw)
                if x_a < x_b:
                    img[:, o["y"]: o["y"] + mh, x_a:x_b] = o["tex"][:, :, x_a - xi: x_b - xi]
                if o["pause"] > 0 and abs(o["x"] - o["pause_at"]) < abs(o["v"]) / fps:
                    o["pause"] -= 1
                else:
                    o["x"] += o["v"] / fps
                if o["x"] > w + 5 or o["x"] < -mw - 5:  # left the view: someone else comes later
                    objs[i] = new_mover()
                    objs[i]["start"] = t + int(fps * float(torch.rand(1, generator=gen)))
            img = img * light + torch.randn(3, h, w, generator=gen) * (noise / 255.0)
            arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
