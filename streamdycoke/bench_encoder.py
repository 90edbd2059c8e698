"""``streamdycoke bench encoder``: differential encoding against full encoding, side by side in one run.

The tower is LLaVA-OneVision's at its real size (SigLIP-so400m at 384 px, 14 px patches: 27 x 27 = 729
patches of width 1,152, 16 heads, MLP 4,304, the 26 layers LLaVA-OneVision reads, then its projector to
the 0.5B LLM's 896) with random weights: compute does not depend on weight values, and no weights can
be downloaded here. Frames are real: the sample clips (bikes, carphone, Big Buck Bunny) and the
synthetic street camera, each decoded at 384 px and run through the default frame sampler, so the frames
compared are the ones a camera would process. For every processed frame the host's own forward pass
(full) and the differential tower at each threshold (each with its own stream state) run one after the
other, so machine load falls on both alike.

Per threshold: ``speedup`` (full / differential wall time per processed frame), ``ops_ratio``
(multiply-accumulates, full / differential), ``token_cosine`` (mean cosine of every patch's output token
to the full encoding's; stricter than after LLaVA's 2x2 pooling), the share of patches recomputed, and
``change_error``: the differential tokens' distance from the full encoding's, relative to how far the full
encoding moved from the previous processed frame (0: exact; 1: as wrong as not re-encoding the frame at
all), and ``kept_agreement``: how the streaming compressor's decisions change (mean Jaccard of the
positions it keeps per frame at a 15% budget, on the pooled tokens, against the same compressor over the
full encoding). With random weights every token is close to every other (cosines near 1 frame to frame),
so ``token_cosine`` alone says little; ``change_error`` is the scale-free figure.

Random weights cannot show accuracy: a trained tower's attention may carry a change farther than a
random one's, so ``token_cosine`` here is a property of the gate and these weights, not of a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .encoders.differential import DifferentialConfig, SiglipDifferential, TowerState, tower_macs
from .encoders.preprocess import to_pixel_values

__all__ = ["THRESHOLDS", "bench_encoder", "llava_tower"]

THRESHOLDS = (0.01, 0.02, 0.04, 0.08)


def llava_tower(tiny: bool = False, llm_width: int = 896, dtype: torch.dtype = torch.bfloat16):
    """LLaVA-OneVision's vision tower and projector with random weights (fixed seed): ``(tower, projector,
    config)``; ``tiny``: the test config's 64 px tower."""
    from transformers import LlavaOnevisionConfig
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionMultiModalProjector
    from transformers.models.siglip.modeling_siglip import SiglipVisionModel

    from .encoders.llava import tiny_llava_onevision_config

    if tiny:
        cfg = tiny_llava_onevision_config()
    else:
        cfg = LlavaOnevisionConfig(
            vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                               num_hidden_layers=26, num_attention_heads=16, image_size=384, patch_size=14,
                               vision_use_head=False),
            text_config=dict(model_type="qwen2", hidden_size=llm_width), vision_feature_layer=-1,
            vision_feature_select_strategy="full")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tower = SiglipVisionModel(cfg.vision_config).to(dtype).eval()
        projector = LlavaOnevisionMultiModalProjector(cfg).to(dtype).eval()
    return tower, projector, cfg


def pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``(B, P, D)`` per patch -> ``(B, N, D)``: LLaVA-OneVision's bilinear pooling to half the grid."""
    B, P, D = x.shape
    g = int(math.isqrt(P))
    y = F.interpolate(x.view(B, g, g, D).permute(0, 3, 1, 2).float(), size=(math.ceil(g / 2),) * 2, mode="bilinear")
    return y.permute(0, 2, 3, 1).reshape(B, -1, D)


def _processed_frames(path: Path, size: int, n: int) -> np.ndarray:
    """The first ``n`` frames of ``path`` the default frame sampler processes, ``(n, S, S, 3)`` uint8."""
    from .sampler import FrameSampler, SamplerConfig
    from .video import decode_frames

    sampler, out = FrameSampler(SamplerConfig()), []
    for fr in decode_frames(str(path), size=(size, size)):
        if sampler.decide(fr.rgb, fr.timestamp).process:
            out.append(fr.rgb)
            if len(out) == n:
                break
    return np.stack(out)


def _kept(tokens: torch.Tensor) -> list[set[int]]:
    """Per frame, the positions the streaming compressor keeps of ``(T, N, D)`` tokens at a 15% budget (rate
    control: a fixed count per frame, so agreement compares what it ranks first)."""
    from .policy import ThresholdPolicy
    from .stream import StreamCompressor, StreamConfig

    comp = StreamCompressor(StreamConfig(budget_ratio=0.15), ThresholdPolicy())
    st, g = comp.new_state("bench"), int(math.isqrt(tokens.shape[1]))
    return [set(comp.process(st, tokens[t], (g, g), t, t / 30.0).positions.tolist()) for t in range(tokens.shape[0])]


def bench_encoder(clips: list[Path], frames: int = 12, thresholds=THRESHOLDS, tiny: bool = False,
                  threads: int | None = None, dtype: str = "bfloat16", progress: bool = True,
                  halo: int | None = None) -> dict:
    """The comparison of the module docstring; returns the JSON-ready result."""
    if threads:
        torch.set_num_threads(threads)
    tdtype = getattr(torch, dtype)
    tower, projector, cfg = llava_tower(tiny, dtype=tdtype)
    vc = cfg.vision_config
    diff = SiglipDifferential(tower, cfg.vision_feature_layer, projector)
    P = (vc.image_size // vc.patch_size) ** 2
    proj_macs = vc.hidden_size * cfg.text_config.hidden_size + cfg.text_config.hidden_size ** 2
    layers = len(diff.layers)
    full_macs = tower_macs(P, vc.hidden_size, vc.intermediate_size, layers, P, patch=vc.patch_size,
                           out_macs_per_patch=proj_macs)
    base = DifferentialConfig() if halo is None else DifferentialConfig(halo=halo)
    configs = {th: DifferentialConfig(threshold=th, halo=base.halo, refresh_every=base.refresh_every,
                                      full_above=base.full_above) for th in thresholds}
    with torch.no_grad():  # one warm-up pass through each path (first calls initialise kernels)
        warm = torch.zeros(1, 3, vc.image_size, vc.image_size, dtype=tdtype)
        projector(tower(warm, output_hidden_states=True).hidden_states[cfg.vision_feature_layer])
        diff.encode(warm, [None], configs[thresholds[0]])
    per_clip = []
    totals = {th: {"full_s": 0.0, "diff_s": 0.0, "macs": 0, "computed": 0, "cos": [], "jaccard": [], "change_err": [], "frames": 0}
              for th in thresholds}
    for clip in clips:
        imgs = _processed_frames(clip, vc.image_size, frames)
        states = {th: TowerState() for th in thresholds}
        full_tokens, diff_tokens = [], {th: [] for th in thresholds}
        clip_row = {"clip": clip.stem, "frames": len(imgs), "thresholds": {}}
        acc = {th: {"full_s": 0.0, "diff_s": 0.0, "macs": 0, "computed": 0, "cos": []} for th in thresholds}
        for i, img in enumerate(imgs):
            pv = to_pixel_values(img[None], (vc.image_size, vc.image_size), (0.5,) * 3, (0.5,) * 3).to(tdtype)
            t0 = time.perf_counter()
            with torch.no_grad():  # the host's own forward pass, as get_video_features runs it
                hs = tower(pv, output_hidden_states=True).hidden_states[cfg.vision_feature_layer]
                full = projector(hs)
            t_full = time.perf_counter() - t0
            full_tokens.append(full[0].float())
            for th in thresholds:
                t0 = time.perf_counter()
                out, stats = diff.encode(pv, [states[th]], configs[th])
                dt = time.perf_counter() - t0
                a = acc[th]
                a["full_s"] += t_full
                a["diff_s"] += dt
                a["computed"] += stats.computed[0]
                a["macs"] += tower_macs(P, vc.hidden_size, vc.intermediate_size, layers, stats.computed[0],
                                        patch=vc.patch_size, out_macs_per_patch=proj_macs)
                a["cos"].append(float(F.cosine_similarity(out[0].float(), full[0].float(), dim=-1).mean()))
                diff_tokens[th].append(out[0].float())
            if progress:
                print(f"  {clip.stem} frame {i + 1}/{len(imgs)}: full {1e3 * t_full:.0f} ms; "
                      + ", ".join(f"{th}: {acc[th]['computed'] and 100 * acc[th]['computed'] / (P * (i + 1)):.0f}% "
                                  f"recomputed" for th in thresholds), file=sys.stderr, flush=True)
        kept_full = _kept(pool_2x2(torch.stack(full_tokens)))
        for th in thresholds:
            a, n = acc[th], len(imgs)
            kept = _kept(pool_2x2(torch.stack(diff_tokens[th])))
            jac = [len(x & y) / len(x | y) if x | y else 1.0 for x, y in zip(kept, kept_full)]
            ft, dt_ = torch.stack(full_tokens), torch.stack(diff_tokens[th])
            moved = (ft[1:] - ft[:-1]).norm(dim=(1, 2))  # how far the full encoding moved frame to frame
            change_err = ((dt_[1:] - ft[1:]).norm(dim=(1, 2)) / moved.clamp_min(1e-12)).tolist()
            clip_row["thresholds"][str(th)] = {
                "speedup": round(a["full_s"] / a["diff_s"], 3), "ops_ratio": round(full_macs * n / a["macs"], 3),
                "token_cosine": round(float(np.mean(a["cos"])), 5), "min_frame_cosine": round(min(a["cos"]), 5),
                "recomputed_share": round(a["computed"] / (P * n), 4), "kept_agreement": round(float(np.mean(jac)), 4),
                "change_error": round(float(np.mean(change_err)), 4) if change_err else None,
                "full_ms_per_frame": round(1e3 * a["full_s"] / n, 1), "diff_ms_per_frame": round(1e3 * a["diff_s"] / n, 1)}
            tt = totals[th]
            tt["full_s"] += a["full_s"]
            tt["diff_s"] += a["diff_s"]
            tt["macs"] += a["macs"]
            tt["computed"] += a["computed"]
            tt["cos"] += a["cos"]
            tt["jaccard"] += jac
            tt["change_err"] += change_err
            tt["frames"] += n
        per_clip.append(clip_row)
    summary = []
    for th in thresholds:
        tt = totals[th]
        summary.append({"threshold": th, "speedup": round(tt["full_s"] / tt["diff_s"], 3),
                        "ops_ratio": round(full_macs * tt["frames"] / tt["macs"], 3),
                        "token_cosine": round(float(np.mean(tt["cos"])), 5),
                        "recomputed_share": round(tt["computed"] / (P * tt["frames"]), 4),
                        "kept_agreement": round(float(np.mean(tt["jaccard"])), 4),
                        "change_error": round(float(np.mean(tt["change_err"])), 4) if tt["change_err"] else None,
                        "full_ms_per_frame": round(1e3 * tt["full_s"] / tt["frames"], 1),
                        "diff_ms_per_frame": round(1e3 * tt["diff_s"] / tt["frames"], 1)})
    default = DifferentialConfig().threshold
    return {"tower": "tiny" if tiny else "siglip-so400m-384 (26 layers) + projector to 896, random weights",
            "dtype": dtype, "threads": torch.get_num_threads(), "patches": P, "frames_per_clip": frames,
            "full_gmacs_per_frame": round(full_macs / 1e9, 2), "default_threshold": default,
            "differential": {k: v for k, v in base.__dict__.items()},
            "results": summary, "clips": per_clip}


def default_clips(cache: Path) -> list[Path]:
    """The real sample clips (fetched once; none offline) and the synthetic street camera (made once)."""
    from .samples import real_clips
    from .video import make_camera_video

    street = cache / "street_camera_20s.mp4"
    if not street.exists():
        make_camera_video(street, seconds=20, seed=0)
    return [*real_clips(cache / "real"), street]


def cmd_bench_encoder(args: argparse.Namespace) -> int:
    cache = Path(args.cache_dir)
    if args.clips:
        clips = [Path(c) for c in args.clips]
    else:
        clips = default_clips(cache)
    res = bench_encoder(clips, frames=args.frames, thresholds=args.thresholds, tiny=args.tiny,
                        threads=args.threads, dtype=args.dtype, progress=not args.quiet, halo=args.halo)
    print(f"{res['tower']}, {res['dtype']}, {res['threads']} threads, {res['frames_per_clip']} processed frames a clip; "
          f"full encoding {res['full_gmacs_per_frame']} GMAC a frame")
    print(f"{'threshold':>10}{'speedup':>9}{'ops':>7}{'cosine':>9}{'chg err':>9}{'recomputed':>12}{'kept agree':>12}"
          f"{'full ms':>9}{'diff ms':>9}")
    for r in res["results"]:
        err = float("nan") if r["change_error"] is None else r["change_error"]
        print(f"{r['threshold']:>10}{r['speedup']:>9.2f}{r['ops_ratio']:>7.2f}{r['token_cosine']:>9.4f}{err:>9.3f}"
              f"{100 * r['recomputed_share']:>11.1f}%{r['kept_agreement']:>12.3f}{r['full_ms_per_frame']:>9.0f}"
              f"{r['diff_ms_per_frame']:>9.0f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    if args.json:
        print(json.dumps(res))
    return 0


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def add_encoder_parser(what) -> None:
    q = what.add_parser("encoder", help="differential vs full encoding of LLaVA-OneVision's real-size tower on real "
                                        "clips: speed-up, operations, token cosine, what the compressor keeps")
    q.add_argument("--frames", type=int, default=12, help="processed frames per clip")
    q.add_argument("--thresholds", type=_floats, default=list(THRESHOLDS), help="comma-separated gate thresholds")
    q.add_argument("--clips", nargs="*", default=None, help="videos (default: the real sample clips and the "
                                                            "synthetic street camera)")
    q.add_argument("--cache-dir", default="runs/videos")
    q.add_argument("--halo", type=int, default=None, help="the gate's halo (default: DifferentialConfig's)")
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    q.add_argument("--tiny", action="store_true", help="the tiny test tower (smoke test; figures meaningless)")
    q.add_argument("--out", default="", help="also write the JSON here")
    q.add_argument("--json", action="store_true", help="also print one JSON object as the last line")
    q.add_argument("-q", "--quiet", action="store_true")
    q.set_defaults(func=cmd_bench_encoder)
