"""``streamdycoke bench prefill``: what compression buys the LLM, measured side by side in one run.

The language model is LLaVA-OneVision-0.5B's (Qwen2: hidden 896, 24 layers, 14 heads, 2 KV heads)
with random weights in bf16: compute and memory do not depend on weight values, and no weights can be
downloaded here. Which visual tokens each method keeps is decided on real tokens: ``F`` frames sampled
uniformly from the synthetic street-camera video (``make-sample``, seed 0), encoded by the pixel
encoder (196 tokens per frame, LLaVA-OneVision's count), selected by the same ``select_tokens`` the
model patch uses. Each case runs in its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .lm_shapes import lm_config

__all__ = ["bench_prefill"]

PREFIX_TOKENS = 14  # system prompt and chat template before the video
SUFFIX_TOKENS = 24  # question and assistant prefix after it


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(spec: dict) -> dict:
    """One case: prefill ``n_visual`` visual tokens between the text, then decode, with and without KV pruning."""
    from transformers import DynamicCache, Qwen2ForCausalLM

    from .patch.kv import DyCokeKVCache, kv_pruning

    torch.set_num_threads(spec["threads"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.random.fork_rng(devices=[]):  # fixed weights, without touching the caller's random state
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(lm_config("tiny" if spec["tiny"] else "0.5b")).to(device).eval()
    torch.set_default_dtype(torch.float32)
    L = PREFIX_TOKENS + spec["n_visual"] + SUFFIX_TOKENS
    embeds = torch.randn(1, L, model.config.hidden_size, generator=gen).to(device, torch.bfloat16) * 0.02
    visual = torch.zeros(1, L, dtype=torch.bool)
    visual[0, PREFIX_TOKENS:PREFIX_TOKENS + spec["n_visual"]] = True

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def run(cache, prune: bool) -> tuple[float, float]:
        with torch.no_grad():
            sync()
            t0 = time.perf_counter()
            out = model(inputs_embeds=embeds, cache=cache, use_cache=True)
            sync()
            t_prefill = time.perf_counter() - t0
            tok = out.logits[:, -1:].argmax(-1)
            steps = []
            for _ in range(spec["decode_tokens"]):
                t0 = time.perf_counter()
                out = model(input_ids=tok, cache=cache, use_cache=True)
                sync()
                steps.append(time.perf_counter() - t0)
                tok = out.logits[:, -1:].argmax(-1)
        return t_prefill, float(np.median(steps))

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()
    run(DynamicCache(config=model.config), False)  # warm-up (allocator, kernels)
    t_prefill, t_decode = run(DynamicCache(config=model.config), False)
    peak = (torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else _rss_mb() - base
    cache = DyCokeKVCache(model, visual, layer=3, prune_ratio=0.7)
    with kv_pruning(model, cache):
        _, t_decode_kv = run(cache, True)
    return {"seq_len": L, "prefill_s": t_prefill, "prefill_peak_mb": peak, "decode_ms_per_token": 1e3 * t_decode,
            "decode_ms_per_token_kv_pruned": 1e3 * t_decode_kv, "device": device}


def _kept_counts(frames: int) -> dict:
    from .encoders import EncoderSpec, build_encoder
    from .patch.core import PatchConfig, select_tokens
    from .video import decode_frames, make_camera_video, probe

    with tempfile.TemporaryDirectory() as tmp:
        video = make_camera_video(Path(tmp) / "cam.mp4", seconds=20, seed=0)
        total = probe(str(video))["frames"]
        want = set(np.linspace(0, total - 1, frames).round().astype(int).tolist())
        enc = build_encoder(EncoderSpec("pixels"))
        rgb = [f.rgb for f in decode_frames(str(video), size=enc.input_size) if f.index in want]
    toks = enc.encode(np.stack(rgb))  # (F, 196, D)
    out = {"uncompressed": toks.shape[0] * toks.shape[1]}
    for name, cfg in (("dycoke_ttm", PatchConfig(method="ttm", merge_ratio=0.7)), ("streaming", PatchConfig())):
        out[name] = int(select_tokens(toks, enc.grid, cfg).sum())
    return out


def bench_prefill(frames: int = 32, decode_tokens: int = 8, threads: int | None = None, tiny: bool = False,
                  progress: bool = True) -> dict:
    threads = threads or torch.get_num_threads()
    kept = _kept_counts(frames)
    res = {"frames": frames, "tokens_per_frame": 196, "threads": threads, "model": "tiny" if tiny else
           "LLaVA-OneVision-0.5B language model (Qwen2 896x24), random weights, bf16",
           "token_source": f"{frames} frames uniformly sampled from the 20 s synthetic street camera (make-sample seed 0), pixel encoder",
           "cases": {}}
    for name in ("uncompressed", "dycoke_ttm", "streaming"):
        if progress:
            print(f"  {name}: {kept[name]} visual tokens ...", file=sys.stderr, flush=True)
        spec = {"n_visual": kept[name], "decode_tokens": decode_tokens, "threads": threads, "tiny": tiny}
        code = f"import json,sys; from streamdycoke.bench_prefill import _worker; print(json.dumps(_worker({spec!r})))"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"prefill case {name} failed:\n{proc.stderr[-2000:]}")
        case = json.loads(proc.stdout.strip().splitlines()[-1])
        case["visual_tokens"] = kept[name]
        case["keep_ratio"] = kept[name] / kept["uncompressed"]
        res["cases"][name] = case
    u, s, t = res["cases"]["uncompressed"], res["cases"]["streaming"], res["cases"]["dycoke_ttm"]
    res["prefill_speedup"] = u["prefill_s"] / s["prefill_s"]
    res["keep_ratio"] = s["keep_ratio"]
    res["ttm_prefill_speedup"] = u["prefill_s"] / t["prefill_s"]
    res["memory_ratio"] = u["prefill_peak_mb"] / max(1e-9, s["prefill_peak_mb"])
    return res


def print_prefill(res: dict) -> None:
    print(f"prefill: {res['model']}; {res['frames']} frames x {res['tokens_per_frame']} tokens; {res['threads']} threads; "
          f"device {res['cases']['uncompressed']['device']}")
    print(f"tokens from: {res['token_source']}")
    print(f"  {'method':<14} {'visual':>7} {'keep':>6} {'seq':>6} {'prefill s':>10} {'speedup':>8} {'peak MB':>8} "
          f"{'decode ms/tok':>14} {'+KV prune':>10}")
    u = res["cases"]["uncompressed"]
    for name, c in res["cases"].items():
        print(f"  {name:<14} {c['visual_tokens']:>7} {c['keep_ratio']:>6.3f} {c['seq_len']:>6} {c['prefill_s']:>10.2f} "
              f"{u['prefill_s'] / c['prefill_s']:>7.2f}x {c['prefill_peak_mb']:>8.0f} {c['decode_ms_per_token']:>14.1f} "
              f"{c['decode_ms_per_token_kv_pruned']:>10.1f}")
    print(f"prefill_speedup (uncompressed / streaming default): {res['prefill_speedup']:.2f}x at keep ratio {res['keep_ratio']:.3f}")
