"""``streamdycoke bench decode``: what one ingest process costs per frame (PyAV decode + resize)."""

import os
import sys
import tempfile
import time
from pathlib import Path

from streamdycoke.samples import REAL_CLIPS
from streamdycoke.video import decode_frames, make_camera_video

__all__ = ["bench_decode"]


def bench_decode(video: str | None = None, size: int = 384, repeats: int = 3, progress: bool = True) -> dict:
    """Frames per second of decoding ``video`` and resizing to ``size x size`` RGB, exactly as
    :func:`~streamdycoke.video.decode_frames` does it for ingest (FFmpeg's own threading, all cores)."""
    import av

    with tempfile.TemporaryDirectory() as tmp:
        if video is None:
            real = Path("runs/videos/real") / REAL_CLIPS[2]  # bigbuckbunny, 1280x720 H.264
            video = str(real) if real.exists() else str(make_camera_video(Path(tmp) / "cam.mp4", seconds=10, seed=3))
        if progress:
            print(f"  decoding {video} to {size}x{size} RGB ...", file=sys.stderr)
        best, frames = float("inf"), 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            frames = sum(1 for _ in decode_frames(video, size=(size, size)))
            best = min(best, time.perf_counter() - t0)
        with av.open(video) as c:
            s = c.streams.video[0]
            source = f"{s.width}x{s.height} {s.codec_context.name}"
    fps = frames / best
    return {"video": video, "source": source, "size": size, "frames": frames, "cpus": os.cpu_count(),
            "decode_fps": fps, "cameras_at_30fps": fps / 30}
