"""``streamdycoke bench standing``: a standing query's rounds on a real-size language model, with the
LLM reusing the window's KV cache (incremental prefill) and without, side by side in one process.

The model is LLaVA-OneVision-0.5B's language model (Qwen2: hidden 896, 24 layers) with random weights
in bf16, under a minimal vision config whose pooled grid is the real 14 x 14 (the vision tower never
runs here: answers read cached tokens). Which tokens a window holds is decided on real frames: the
synthetic street camera (``make-sample``, seed 0) through the default pipeline (sampler, threshold
policy) with the pixel encoder (196 tokens a frame); each kept token is given a random 896-wide value
(compute does not depend on values). Then, every ``every_s`` of the stream's time, the standing query
asks about its window (:class:`actors.standing.WindowAnchor`: ``window_s``, sliding by ``slide_s``):
once through :meth:`LLMEngine.answer` with a reuse key, once without, timing each answer and counting
the rounds where both answered the same (in float32 they always do, tested; in bf16 the prefill in
chunks rounds differently from the whole one, and random weights' near-tie logits can flip a token).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from streamdycoke.stats import percentile

__all__ = ["bench_standing", "print_standing"]


def _model(tiny: bool):
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from streamdycoke.lm_shapes import lm_config
    from streamdycoke.encoders.llava import tiny_llava_onevision_config

    tiny_cfg = tiny_llava_onevision_config()
    # the real language model (or the tiny one, for a smoke test) under a minimal vision config whose pooled
    # video grid is the real 14 x 14
    text = tiny_cfg.text_config if tiny else lm_config("0.5b")
    cfg = LlavaOnevisionConfig(
        vision_config=dict(tiny_cfg.vision_config.to_dict(), image_size=224, patch_size=8),
        text_config=text.to_dict(), image_token_index=text.vocab_size - 2, video_token_index=text.vocab_size - 1,
        vision_feature_layer=-1, vision_feature_select_strategy="full")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16 if not tiny else torch.float32)
        try:
            m = LlavaOnevisionForConditionalGeneration(cfg)
        finally:
            torch.set_default_dtype(torch.float32)
    return m.eval()


def _stream(model, seconds: float) -> list:
    """The camera's segments (real kept positions and timing, random token values at the model's width)."""
    from streamdycoke import EncoderSpec, PipelineConfig, build_pipeline
    from streamdycoke.encoders.llava import video_grid
    from streamdycoke.segment import TokenSegment
    from streamdycoke.video import decode_frames, make_camera_video

    grid = video_grid(model.config)
    D = model.get_input_embeddings().weight.shape[1]
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        video = make_camera_video(Path(tmp) / "cam.mp4", seconds=seconds, seed=0)
        pipe = build_pipeline("cam", PipelineConfig(encoder=EncoderSpec("pixels")))
        if pipe.encoder.grid != grid:
            raise RuntimeError(f"pixel grid {pipe.encoder.grid} is not the model's {grid}")
        out = []
        for f in decode_frames(str(video), size=pipe.encoder.input_size):
            o = pipe.push(f.rgb, f.index, f.timestamp)
            if o.segment is not None:
                s = o.segment
                out.append(TokenSegment(s.stream_id, s.frame_index, s.timestamp, s.positions,
                                        (torch.randn(s.num_kept, D, generator=gen) * 0.02).to(torch.bfloat16),
                                        s.keyframe, s.grid))
    return out


def bench_standing(window_s: float = 10.0, slide_s: float | None = None, every_s: float = 1.0,
                   seconds: float = 40.0, max_new_tokens: int = 8, threads: int | None = None, tiny: bool = False,
                   progress: bool = True) -> dict:
    from actors.standing import WindowAnchor
    from streamdycoke.segment import encode_segment

    from actors.llm_request import LLMRequest

    from deployments.llm import LLMEngine

    if threads:
        torch.set_num_threads(threads)
    slide = slide_s if slide_s is not None else window_s / 2
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    log("building the model and the camera's stream ...")
    model = _model(tiny)
    segs = _stream(model, seconds)
    engine = LLMEngine(model=model)
    anchor = WindowAnchor(window_s, slide)
    rounds, t = [], segs[0].timestamp + every_s
    while t <= segs[-1].timestamp:
        newest = max(s.timestamp for s in segs if s.timestamp <= t)
        start = anchor.window(newest)
        kf = [s.timestamp for s in segs if s.keyframe and s.timestamp <= start]  # a window starts at a keyframe
        lo = kf[-1] if kf else segs[0].timestamp
        window = [encode_segment(s) for s in segs if lo <= s.timestamp <= t]
        row = {"t": t - segs[0].timestamp, "frames": len(window)}
        for name, key in (("reuse", "cam|w"), ("full", None)):
            req = LLMRequest("cam", "Is anything moving? Answer yes or no.", max_new_tokens, window, reuse_key=key)
            t0 = time.perf_counter()
            res = engine.answer([req])[0]
            row[name] = {"s": time.perf_counter() - t0, "prefill_ms": res.prefill_ms, "answer": res.answer,
                         "prefilled": res.prefilled_tokens, "reused": res.reused_tokens}
        row["visual_tokens"] = res.visual_tokens
        row["equal"] = row["reuse"]["answer"] == row["full"]["answer"]
        rounds.append(row)
        log(f"  t={row['t']:5.1f}s  {row['frames']:3d} frames {row['visual_tokens']:5d} visual tokens  "
            f"reuse {1e3 * row['reuse']['s']:7.0f} ms ({row['reuse']['prefilled']} prefilled)  "
            f"full {1e3 * row['full']['s']:7.0f} ms  {'same answer' if row['equal'] else 'ANSWERS DIFFER'}")
        t += every_s
    res = {"model": "tiny" if tiny else "LLaVA-OneVision-0.5B language model (Qwen2 896x24), random weights, bf16",
           "window_s": window_s, "slide_s": slide, "every_s": every_s, "seconds": seconds,
           "threads": torch.get_num_threads(), "max_new_tokens": max_new_tokens, "rounds": rounds,
           "answers_equal": all(r["equal"] for r in rounds), "answers_equal_rounds": sum(r["equal"] for r in rounds)}
    for name in ("reuse", "full"):
        xs = [r[name]["s"] for r in rounds]
        pf = [r[name]["prefill_ms"] for r in rounds]
        res[name] = {"p50_ms": 1e3 * percentile(xs, 0.5), "p90_ms": 1e3 * percentile(xs, 0.9),
                     "max_ms": 1e3 * max(xs), "prefill_p50_ms": percentile(pf, 0.5),
                     "prefilled_tokens_mean": float(np.mean([r[name]["prefilled"] for r in rounds]))}
    res["visual_tokens_mean"] = float(np.mean([r["visual_tokens"] for r in rounds]))
    res["speedup_p50"] = res["full"]["p50_ms"] / res["reuse"]["p50_ms"]
    return res


def print_standing(res: dict) -> None:
    print(f"standing query rounds: {res['model']}; window {res['window_s']:g} s sliding by {res['slide_s']:g} s, "
          f"asked every {res['every_s']:g} s over {res['seconds']:g} s of the stream, {res['max_new_tokens']} "
          f"new tokens, {res['threads']} threads; {len(res['rounds'])} rounds, {res['visual_tokens_mean']:.0f} "
          "visual tokens a window on average")
    print(f"  {'LLM prefill':<24} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8} {'prefill p50 ms':>15} {'tokens prefilled':>17}")
    for name, label in (("reuse", "incremental (kept cache)"), ("full", "whole window")):
        v = res[name]
        print(f"  {label:<24} {v['p50_ms']:>8.0f} {v['p90_ms']:>8.0f} {v['max_ms']:>8.0f} {v['prefill_p50_ms']:>15.0f} "
              f"{v['prefilled_tokens_mean']:>17.0f}")
    print(f"round p50: whole window / incremental = {res['speedup_p50']:.2f}x; the same answer in "
          f"{res['answers_equal_rounds']} of {len(res['rounds'])} rounds (in bf16 a chunked prefill rounds differently "
          "from a whole one, which can flip a near-tie between random weights' logits)")


def plot_standing(res: dict, path: str) -> None:
    """Each round's latency over the stream's time, with and without reuse, and the window's visual tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in res["rounds"]]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t, [1e3 * r["full"]["s"] for r in res["rounds"]], marker="o", ms=3, label="whole window prefilled")
    ax.plot(t, [1e3 * r["reuse"]["s"] for r in res["rounds"]], marker="o", ms=3, label="incremental (kept KV cache)")
    ax.set_xlabel("stream time (s)")
    ax.set_ylabel("round latency (ms)")
    ax.grid(alpha=0.3)
    tw = ax.twinx()
    tw.plot(t, [r["visual_tokens"] for r in res["rounds"]], color="grey", ls=":", label="visual tokens in the window")
    tw.set_ylabel("visual tokens in the window")
    lines = ax.get_legend_handles_labels()
    more = tw.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    ax.set_title(f"A standing query every {res['every_s']:g} s, window {res['window_s']:g} s sliding by "
                 f"{res['slide_s']:g} s; {res['model'].split(',')[0]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
