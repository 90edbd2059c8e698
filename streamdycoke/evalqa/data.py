"""Encoded event streams: every frame of a generated scene through the encoder, cached on disk.

Every frame is encoded, the ones a sampler would skip included: the measures cover every frame in
(what a compressed stream holds at a skipped frame is what it held before it).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..encoders import Encoder
from ..sampler import thumbnail
from .scenes import (OBJECTS, FPS, Imagery, Scene, SceneSpec, generate_scene, object_on_grey, object_reference_frame,
                     render, split_objects)

__all__ = ["EncodedStream", "GENERATOR_VERSION", "encode_streams", "object_references"]

GENERATOR_VERSION = 1  # bump when scenes.py renders differently: the cache keys on it


@dataclass
class EncodedStream:
    """One stream, ready for the compressors and the answerers.

    Attributes:
        scene: the generated scene (ground truth); None for a real clip.
        tokens: ``(T, N, D)`` float16, every frame's tokens.
        thumbs: ``(T, 32, 32)`` float32 grey thumbnails (what the frame sampler looks at).
    """

    scene: Scene | None
    tokens: torch.Tensor
    thumbs: np.ndarray
    times: list[float] | None = None  # capture times (default: frame / FPS)
    name: str = ""

    @property
    def timestamps(self) -> list[float]:
        return self.times if self.times is not None else [i / FPS for i in range(self.tokens.shape[0])]


def _key(encoder: Encoder, split: str, seed: int, spec: SceneSpec, imagery: Imagery | None = None) -> str:
    raw = f"{GENERATOR_VERSION}|{encoder.name}|{split}|{seed}|{spec}"
    if imagery is not None:
        raw += f"|{imagery.fingerprint}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def encode_streams(
    encoder: Encoder, split: str, seeds: list[int], *, spec: SceneSpec | None = None,
    cache_dir: str | Path | None = None, progress: bool = True, batch: int = 20, imagery: Imagery | None = None,
) -> list[EncodedStream]:
    """Generate and encode the streams ``seeds`` of ``split`` (cached per stream under ``cache_dir``); with
    ``imagery``, test streams of a user's pictures (:func:`~.scenes.generate_scene`)."""
    spec = spec or SceneSpec()
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    out = []
    bar = tqdm(seeds, desc=f"encode {split}", unit="stream", disable=not progress, file=sys.stderr)
    for seed in bar:
        scene = generate_scene(seed, split, spec, imagery)
        path = cache / f"{_key(encoder, split, seed, spec, imagery)}.pt" if cache is not None else None
        if path is not None and path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            out.append(EncodedStream(scene, saved["tokens"], saved["thumbs"].numpy()))
            continue
        frames = np.stack([render(scene, f) for f in range(scene.frames)])
        thumbs = np.stack([thumbnail(f) for f in frames])
        toks = torch.cat([encoder.encode(frames[i:i + batch]) for i in range(0, len(frames), batch)]).half()
        if path is not None:
            tmp = path.with_suffix(".tmp")
            torch.save({"tokens": toks, "thumbs": torch.from_numpy(thumbs)}, tmp)
            tmp.replace(path)
        out.append(EncodedStream(scene, toks, thumbs))
    return out


def object_references(encoder: Encoder, split: str | None = None, names: list[str] | None = None,
                      imagery: Imagery | None = None) -> dict[str, torch.Tensor]:
    """Each object's references ``(1 + K, D)``, unit rows: row 0 the mean of the encoder's tokens over the
    object's picture (the central ``3 x 3`` positions of its reference frame, where the object is: what a
    question's query carries), rows ``1..K`` the tokens of every grid cell the object covers at least half
    of, with the object drawn at the sizes a stream shows it (50-70 px) and shifted against the grid
    (a reader matches a slot against each: an object a cell or two wide straddles cells differently on
    every frame). Objects: ``names``, else those of ``split``, else all (and
    ``imagery``'s, pictured from its files)."""
    if names is None:
        names = split_objects(split) if split is not None else list(OBJECTS)
        if imagery is not None:
            names = list(dict.fromkeys([*names, *imagery.objects]))
    frames = np.stack([object_reference_frame(n, imagery=imagery) for n in names])
    toks = encoder.encode(frames)  # (K, N, D)
    gh, gw = encoder.grid
    grid = toks.view(len(names), gh, gw, -1)
    cy, cx = gh // 2, gw // 2
    centre = grid[:, cy - 1:cy + 2, cx - 1:cx + 2].reshape(len(names), -1, toks.shape[-1]).mean(1)
    out = {}
    for name, mean in zip(names, centre):
        views = [object_on_grey(name, size, shift, imagery) for size in _REFERENCE_SIZES for shift in _REFERENCE_SHIFTS]
        vt = encoder.encode(np.stack([v for v, _ in views])).float()  # (V, N, D)
        alpha = torch.from_numpy(np.stack([a for _, a in views])).unsqueeze(1)  # (V, 1, S, S)
        cover = F.adaptive_avg_pool2d(alpha, (gh, gw)).flatten(1)  # (V, N): share of each cell the object covers
        cells = vt[cover >= 0.5]  # (K, D)
        out[name] = F.normalize(torch.cat([mean.float().unsqueeze(0), cells]), dim=-1)
    return out


_REFERENCE_SIZES = (50, 60, 70)  # px: spanning the 50-70 px the generator draws objects at (scenes.py)
_REFERENCE_SHIFTS = ((0, 0), (11, 0), (22, 0), (0, 16), (11, 16), (22, 16))  # px against the 32-px grid
