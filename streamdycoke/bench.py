"""``streamdycoke bench compress``: frames per second per core of the compression step, side by side
with paper-faithful DyCoke TTM on the same tokens, and of the whole per-frame path per encoder.

The token stream is synthetic and camera-like: a still scene in which 15% of the positions change
each frame (a random walk), plus small noise on every token. Compression cost depends on N, D and
how many tokens are kept, not on what the tokens mean. Everything runs on one thread
(``torch.set_num_threads(1)``), so figures are per core; ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from .encoders import EncoderSpec, build_encoder
from .pipeline import FramePipeline
from .policy import ThresholdPolicy
from .sampler import FrameSampler
from .stream import StreamCompressor, StreamConfig
from .ttm import dycoke_ttm
from .video import decode_frames, make_camera_video

__all__ = ["add_bench_parser", "bench_common_options", "bench_compress", "camera_like_tokens"]


def camera_like_tokens(T: int, N: int, D: int, moving: float = 0.15, seed: int = 0) -> torch.Tensor:
    """``(T, N, D)`` float32: a still scene where ``moving`` of the positions change each frame."""
    g = torch.Generator().manual_seed(seed)
    cur = torch.randn(N, D, generator=g)
    out = torch.empty(T, N, D)
    for t in range(T):
        m = torch.rand(N, generator=g) < moving
        cur[m] += 0.8 * torch.randn(int(m.sum()), D, generator=g)
        out[t] = cur + 0.02 * torch.randn(N, D, generator=g)
    return out


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def _stream_fps(tokens: torch.Tensor, grid: tuple[int, int], repeats: int) -> dict:
    T = tokens.shape[0]
    comp = StreamCompressor(StreamConfig(), ThresholdPolicy())

    def run() -> None:
        st = comp.new_state("bench")
        for i in range(T):
            comp.process(st, tokens[i], grid, i, i / 30.0)
        run.keep = st.stats.keep_ratio  # type: ignore[attr-defined]

    run()  # warm-up
    best, med = _best_of(run, repeats)
    return {"fps": T / best, "fps_median": T / med, "us_per_frame": 1e6 * best / T, "keep_ratio": run.keep}  # type: ignore[attr-defined]


def _ttm_fps(tokens: torch.Tensor, repeats: int) -> dict:
    T, N, _ = tokens.shape
    dycoke_ttm(tokens)
    best, med = _best_of(lambda: dycoke_ttm(tokens, merge_ratio=0.7), repeats)
    kept = dycoke_ttm(tokens, merge_ratio=0.7).tokens.shape[0]
    return {"fps": T / best, "fps_median": T / med, "us_per_frame": 1e6 * best / T, "keep_ratio": kept / (T * N)}


def _path_fps(video: Path, encoder_name: str, max_frames: int) -> dict:
    enc = build_encoder(EncoderSpec(encoder_name, weights=None))
    frames = [f for _, f in zip(range(max_frames), decode_frames(str(video), size=enc.input_size))]
    enc.encode(frames[0].rgb[None])  # warm-up
    out = {}
    for name, sampler in (("all_frames", None), ("with_sampler", FrameSampler())):
        pipe = FramePipeline("bench", enc, StreamCompressor(), sampler)
        t0 = time.perf_counter()
        enc_s = comp_s = 0.0
        for f in frames:
            o = pipe.push(f.rgb, f.index, f.timestamp)
            enc_s += o.encode_s
            comp_s += o.compress_s
        wall = time.perf_counter() - t0
        processed = pipe.state.stats.frames
        out[name] = {
            "fps": len(frames) / wall, "frames": len(frames), "processed": processed,
            "encode_ms": 1e3 * enc_s / max(1, processed), "compress_ms": 1e3 * comp_s / max(1, processed),
        }
    out["tokens_per_frame"] = enc.grid[0] * enc.grid[1]
    out["dim"] = enc.dim
    out["pretrained"] = bool(getattr(enc, "pretrained", True))
    return out


def _sampler_us(h: int, w: int, n: int = 200) -> float:
    """Microseconds per :meth:`FrameSampler.decide` on ``h x w`` frames (best of 3)."""
    import numpy as np

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    best = float("inf")
    for _ in range(3):
        s = FrameSampler()
        t0 = time.perf_counter()
        for i in range(n):
            s.decide(frames[i % 4], i / 30)
        best = min(best, (time.perf_counter() - t0) / n)
    return 1e6 * best


def bench_compress(frames: int = 256, repeats: int = 5, dims: tuple[int, ...] = (896, 3584), video: str | None = None,
                   path_frames: int = 300, progress: bool = True) -> dict:
    torch.set_num_threads(1)
    res: dict = {"threads": 1, "tokens_per_frame": 196, "frames": frames, "dims": {}}
    for D in dims:
        if progress:
            print(f"  compression step, N=196 D={D} ...", file=sys.stderr)
        toks = camera_like_tokens(frames, 196, D)
        res["dims"][str(D)] = {"streaming": _stream_fps(toks, (14, 14), repeats), "dycoke_ttm": _ttm_fps(toks, repeats)}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(video) if video else make_camera_video(Path(tmp) / "cam.mp4", seconds=path_frames / 30, seed=3)
        res["per_frame_path"] = {}
        for name in ("pixels", "llava-onevision"):
            if progress:
                print(f"  whole per-frame path, encoder {name} ...", file=sys.stderr)
            res["per_frame_path"][name] = _path_fps(src, name, path_frames)
    res["sampler_us_per_frame"] = {"720p": _sampler_us(720, 1280), "1080p": _sampler_us(1080, 1920)}
    d0 = res["dims"][str(dims[0])]
    res["compress_fps_per_core"] = d0["streaming"]["fps"]
    res["reference_fps_per_core"] = d0["dycoke_ttm"]["fps"]
    return res


def _print(res: dict) -> None:
    print(f"compression step alone, 1 thread, N={res['tokens_per_frame']}, {res['frames']} frames (best of runs):")
    print(f"  {'D':>5} {'method':<22} {'frames/s':>10} {'us/frame':>9} {'keep':>6}")
    for D, r in res["dims"].items():
        for name, label in (("streaming", "streaming (default)"), ("dycoke_ttm", "DyCoke TTM (offline)")):
            x = r[name]
            print(f"  {D:>5} {label:<22} {x['fps']:>10.0f} {x['us_per_frame']:>9.1f} {x['keep_ratio']:>6.3f}")
        print(f"  {'':>5} streaming / TTM speed: {r['streaming']['fps'] / r['dycoke_ttm']['fps']:.2f}x")
    print("whole per-frame path (decode excluded: sampler + encoder + compressor), 1 thread:")
    for name, r in res["per_frame_path"].items():
        tag = "" if r["pretrained"] else " [tiny random config]"
        for mode in ("all_frames", "with_sampler"):
            x = r[mode]
            print(f"  {name:<16}{tag:<22} {mode:<13} {x['fps']:>8.0f} frames/s in  "
                  f"({x['processed']}/{x['frames']} processed; encode {x['encode_ms']:.2f} ms, compress {x['compress_ms']:.3f} ms)")
    sp = res["sampler_us_per_frame"]
    print(f"frame sampler (pixels only, before any encoder): {sp['720p']:.0f} us per 720p frame, {sp['1080p']:.0f} us per 1080p frame")
    print(f"goal 3000 frames/s per core: streaming reaches {res['compress_fps_per_core']:.0f} at D=896")


def cmd_bench_compress(args: argparse.Namespace) -> int:
    res = bench_compress(frames=args.frames, repeats=args.repeats, video=args.video, progress=not args.quiet)
    _print(res)
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_prefill(args: argparse.Namespace) -> int:
    from .bench_prefill import bench_prefill, print_prefill

    res = bench_prefill(frames=args.frames, decode_tokens=args.decode_tokens, tiny=args.tiny, progress=not args.quiet)
    print_prefill(res)
    if args.json:
        print(json.dumps(res))
    return 0


def add_bench_parser(sub) -> argparse._SubParsersAction:
    """``streamdycoke bench WHAT``; returns the subparsers other packages add their benchmarks to."""
    p = sub.add_parser("bench", help="benchmarks that print figures (and JSON)")
    what = p.add_subparsers(dest="what", required=True)

    q = what.add_parser("compress", help="frames/s per core of the compression step, vs DyCoke TTM")
    q.add_argument("--frames", type=int, default=256, help="token-stream length")
    q.add_argument("--repeats", type=int, default=5)
    q.add_argument("--video", default=None, help="video for the per-frame path (default: a synthetic camera clip)")
    bench_common_options(q)
    q.set_defaults(func=cmd_bench_compress)

    q = what.add_parser("prefill", help="LLM prefill time and memory, uncompressed vs TTM vs streaming")
    q.add_argument("--frames", type=int, default=32, help="video frames")
    q.add_argument("--decode-tokens", type=int, default=8, help="decode steps timed per case")
    q.add_argument("--tiny", action="store_true", help="a tiny LM (smoke test, figures meaningless)")
    bench_common_options(q)
    q.set_defaults(func=cmd_bench_prefill)

    from .bench_encoder import add_encoder_parser
    from .bench_gpu import add_gpu_parser

    add_encoder_parser(what)
    add_gpu_parser(what)
    return what


def bench_common_options(p: argparse.ArgumentParser) -> None:
    """``--json`` and ``-q``, which every benchmark takes."""
    p.add_argument("--json", action="store_true", help="also print one JSON object as the last line")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
