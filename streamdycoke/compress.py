"""``streamdycoke compress``: run sampler, encoder and streaming compressor over a video."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .config import PipelineConfig
from .pipeline import build_pipeline
from .segment import apply_segment, decode_segment, encode_segment
from .store import InMemoryTokenStore
from .video import DecodeStats, decode_frames, probe

__all__ = ["CompressReport", "compress_video"]


@dataclass
class CompressReport:
    source: str
    encoder: str
    policy: str
    frames_in: int
    frames_processed: int
    keyframes: int
    tokens_per_frame: int
    tokens_in: int
    tokens_kept: int
    keep_ratio: float
    processed_keep_ratio: float
    fidelity: float
    fidelity_all_frames: float | None
    compress_fps: float
    wall_s: float
    encode_ms_per_frame: float
    compress_ms_per_frame: float
    store_bytes: int
    raw_fp16_bytes: int
    corrupt_packets: int

    def summary(self) -> str:
        return "\n".join([
            f"source            {self.source}",
            f"encoder / policy  {self.encoder} / {self.policy}",
            f"frames            {self.frames_in} in, {self.frames_processed} processed "
            f"({self.frames_in - self.frames_processed} skipped by the sampler), {self.keyframes} keyframes",
            f"tokens            {self.tokens_kept:,} kept of {self.tokens_in:,} "
            f"({self.tokens_per_frame}/frame): keep ratio {self.keep_ratio:.3f} "
            f"({self.processed_keep_ratio:.3f} of processed frames)",
            f"fidelity          {self.fidelity:.4f} mean cosine, original vs reconstruction (processed frames)",
            *([f"                  {self.fidelity_all_frames:.4f} over every frame in (skipped frames encoded "
               "for the measurement only)"] if self.fidelity_all_frames is not None else []),
            f"stored            {self.store_bytes / 1e6:.2f} MB vs {self.raw_fp16_bytes / 1e6:.2f} MB raw fp16",
            *([f"damaged input     {self.corrupt_packets} corrupt packets skipped"] if self.corrupt_packets else []),
            f"speed             {self.compress_fps:.1f} frames/s end to end "
            f"(encode {self.encode_ms_per_frame:.2f} ms, compress {self.compress_ms_per_frame:.3f} ms per processed frame)",
        ])


def compress_video(
    source: str,
    config: PipelineConfig | None = None,
    *,
    progress: bool = True,
    max_frames: int | None = None,
    measure_skipped: bool = False,
) -> CompressReport:
    """Compress one video and measure it.

    ``keep_ratio`` counts every decoded frame as input (a skipped frame is fully dropped);
    ``fidelity`` is the mean cosine between every processed frame's tokens and their reconstruction
    from the stored segments, read back through the binary format. With ``measure_skipped`` every
    frame the sampler skipped is encoded too, for the measurement only, and ``fidelity_all_frames``
    is the mean over every frame in of the cosine between its tokens and what the store holds then
    (what skipping lost shows there, not in ``fidelity``).
    """
    config = config or PipelineConfig()
    store = InMemoryTokenStore()
    pipe = build_pipeline("video", config)
    encoder = pipe.encoder
    stats = DecodeStats()
    try:
        total = probe(source)["frames"] or None
    except Exception:  # live URL: no length
        total = None
    if max_frames is not None:
        total = min(total or max_frames, max_frames)
    n = encoder.grid[0] * encoder.grid[1]
    cos_sum = 0.0
    cos_all = 0.0
    enc_s = comp_s = 0.0
    start = time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc="compress", disable=not progress, file=sys.stderr)
    held = None
    for frame in decode_frames(source, size=encoder.input_size, stats=stats):
        if max_frames is not None and frame.index >= max_frames:
            break
        out = pipe.push(frame.rgb, frame.index, frame.timestamp, keep_tokens=True)
        bar.update(1)
        if out.segment is None:
            if measure_skipped and held is not None:
                live = encoder.encode(frame.rgb)[0]
                cos_all += float(torch.nn.functional.cosine_similarity(live.float(), held, dim=-1).mean())
            continue
        enc_s += out.encode_s
        comp_s += out.compress_s
        store.append(out.segment)
        # Fidelity against what the store holds: the segment through the wire format, one frame at a
        # time (bounded memory, constant cost per frame).
        held = apply_segment(held, decode_segment(encode_segment(out.segment)))
        cos = torch.nn.functional.cosine_similarity(out.tokens.float(), held, dim=-1)
        cos_sum += float(cos.mean())
        cos_all += float(cos.mean())
        bar.set_postfix(keep=f"{pipe.state.stats.tokens_kept / max(1, pipe.frames_in * n):.3f}")
    bar.close()
    wall = time.perf_counter() - start
    st = pipe.state.stats
    tokens_in = pipe.frames_in * n
    return CompressReport(
        source=source, encoder=encoder.name, policy=config.policy.name,
        frames_in=pipe.frames_in, frames_processed=st.frames, keyframes=st.keyframes, tokens_per_frame=n,
        tokens_in=tokens_in, tokens_kept=st.tokens_kept,
        keep_ratio=st.tokens_kept / tokens_in if tokens_in else 0.0,
        processed_keep_ratio=st.keep_ratio,
        fidelity=cos_sum / st.frames if st.frames else 1.0,
        fidelity_all_frames=(cos_all / pipe.frames_in if pipe.frames_in else 1.0) if measure_skipped else None,
        compress_fps=pipe.frames_in / wall if wall else 0.0, wall_s=wall,
        encode_ms_per_frame=1e3 * enc_s / max(1, st.frames), compress_ms_per_frame=1e3 * comp_s / max(1, st.frames),
        store_bytes=store.nbytes("video"), raw_fp16_bytes=tokens_in * encoder.dim * 2,
        corrupt_packets=stats.corrupt_packets,
    )

