"""``streamdycoke bench gpu``: the figures a deployment plans with, on one CUDA GPU, in minutes.

1. The encoder: LLaVA-OneVision's real-size tower (:func:`streamdycoke.bench_encoder.llava_tower`, random
   weights) in bf16, frames/s at batch sizes 1-64, whole and differential (each frame of the batch a
   camera whose previous frame is in its state, ``--changed`` of its patches changed: the share
   ``bench encoder`` measures on real clips).
2. The LLM: the 0.5B and 7B LLaVA-OneVision language models' shapes (Qwen2, random weights, bf16),
   prefill of a camera window uncompressed (``--frames`` x 196 visual tokens) and compressed (the
   ``--keep`` share plus the live frame whole), then per-token decode; a query's latency is prefill plus
   ``--answer-tokens`` decode steps.
3. Cameras per GPU at 1, 5 and 15 processed frames a second: the encoder's best frames/s over the rate
   (encoding bound; the LLM's share of the GPU is the query rate times the query latency).

Compute does not depend on weight values, so random weights give honest times. JSON and a plot.
``--tiny`` runs tiny shapes on the CPU (the test; figures meaningless).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from .encoders.differential import DifferentialConfig, SiglipDifferential, TowerState
from .lm_shapes import lm_config

__all__ = ["bench_gpu"]

BATCHES = (1, 2, 4, 8, 16, 32, 64)
RATES = (1, 5, 15)
TOKENS_PER_FRAME = 196
PROMPT_TEXT = 40  # system prompt, chat template and question around the video



def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _encoder(device, dtype, tiny: bool, batches, changed: float, repeats: int, progress: bool) -> list[dict]:
    from .bench_encoder import llava_tower

    tower, projector, cfg = llava_tower(tiny, dtype=dtype)
    tower, projector = tower.to(device), projector.to(device)
    diff = SiglipDifferential(tower, cfg.vision_feature_layer, projector)
    side, patch = cfg.vision_config.image_size, cfg.vision_config.patch_size
    grid = side // patch
    rows = max(1, round(changed * grid)) * patch  # the top rows of patches change: ~`changed` of them
    dcfg = DifferentialConfig(threshold=0.02, halo=0, refresh_every=0, full_above=1.0)
    out = []
    for b in batches:
        g = torch.Generator().manual_seed(b)
        first = torch.randn(b, 3, side, side, generator=g).to(device, dtype)
        second = first.clone()
        second[:, :, :rows] += 1.0

        def full():
            with torch.no_grad():
                projector(tower(second, output_hidden_states=True).hidden_states[cfg.vision_feature_layer])

        states = [TowerState() for _ in range(b)]
        diff.encode(first, states, dcfg)
        snapshot = [(s.pixels.clone(), [k.clone() for k in s.keys], [v.clone() for v in s.values], s.out.clone())
                    for s in states]
        computed = []

        def differential():
            # every run starts from the first frame's reference pixels, so it recomputes the same patches (the
            # keys and values written in place are the second frame's each time: the same work)
            for s, (p, k, v, o) in zip(states, snapshot):
                s.pixels, s.keys, s.values, s.out = p.clone(), list(k), list(v), o.clone()
            _, st = diff.encode(second, states, dcfg)
            computed.append(sum(st.computed) / (st.patches * b))

        t_full = _timed(full, device, repeats)
        t_diff = _timed(differential, device, repeats)
        row = {"batch": b, "full_frames_per_s": round(b / t_full, 2), "differential_frames_per_s": round(b / t_diff, 2),
               "recomputed_share": round(computed[-1], 3), "speedup": round(t_full / t_diff, 3)}
        out.append(row)
        if progress:
            print(f"  encoder batch {b}: {row}", file=sys.stderr, flush=True)
    return out


def _lm(device, dtype, shape: str, frames: int, keep: float, answer_tokens: int, repeats: int,
        progress: bool) -> dict:
    from transformers import DynamicCache, Qwen2ForCausalLM

    cfg = lm_config(shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg).to(dtype).eval()
    res = {"lm": shape, "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3)}
    lengths = {"uncompressed": frames * TOKENS_PER_FRAME,
               "compressed": round(keep * (frames - 1) * TOKENS_PER_FRAME) + TOKENS_PER_FRAME}
    for name, n_visual in lengths.items():
        L = PROMPT_TEXT + n_visual
        embeds = (torch.randn(1, L, cfg.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.02).to(device, dtype)
        state = {}

        def prefill():
            with torch.no_grad():
                cache = DynamicCache()
                o = model(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
                state["cache"], state["next"] = cache, o.logits[:, -1:].argmax(-1)

        t_prefill = _timed(prefill, device, repeats)
        prefill()

        def decode():
            with torch.no_grad():
                cache, tok = state["cache"], state["next"]
                for _ in range(answer_tokens):
                    o = model(input_ids=tok, past_key_values=cache, use_cache=True)
                    tok = o.logits[:, -1:].argmax(-1)

        _sync(device)
        t0 = time.perf_counter()
        decode()
        _sync(device)
        per_token = (time.perf_counter() - t0) / answer_tokens
        res[name] = {"visual_tokens": n_visual, "prefill_ms": round(1e3 * t_prefill, 2),
                     "decode_ms_per_token": round(1e3 * per_token, 2),
                     "query_ms": round(1e3 * (t_prefill + answer_tokens * per_token), 2)}
        if progress:
            print(f"  LM {shape} {name}: {res[name]}", file=sys.stderr, flush=True)
    res["prefill_speedup"] = round(res["uncompressed"]["prefill_ms"] / res["compressed"]["prefill_ms"], 3)
    res["query_speedup"] = round(res["uncompressed"]["query_ms"] / res["compressed"]["query_ms"], 3)
    return res


def bench_gpu(tiny: bool = False, batches=BATCHES, lms=("0.5b", "7b"), frames: int = 32, keep: float = 0.15,
              changed: float = 0.25, answer_tokens: int = 16, repeats: int = 3, progress: bool = True) -> dict:
    """The measurements of the module docstring; returns the JSON-ready result."""
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    enc = _encoder(device, dtype, tiny, batches, changed, repeats, progress)
    llm = []
    for s in lms:  # one model at a time: the 7B one alone takes 15 GB
        llm.append(_lm(device, dtype, "tiny" if tiny else s, frames, keep, answer_tokens, repeats, progress))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    best_full = max(r["full_frames_per_s"] for r in enc)
    best_diff = max(r["differential_frames_per_s"] for r in enc)
    cameras = [{"fps": f, "full": int(best_full // f), "differential": int(best_diff // f)} for f in RATES]
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": str(dtype).removeprefix("torch."), "tiny": tiny, "changed_share": changed, "keep": keep,
            "frames": frames, "answer_tokens": answer_tokens, "encoder": enc, "llm": llm,
            "cameras_per_gpu": cameras, "seconds": round(time.perf_counter() - t0, 1)}


def plot_gpu(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    bs = [r["batch"] for r in res["encoder"]]
    a.plot(bs, [r["full_frames_per_s"] for r in res["encoder"]], marker="o", label="whole frames")
    a.plot(bs, [r["differential_frames_per_s"] for r in res["encoder"]], marker="o",
           label=f"differential ({100 * res['changed_share']:.0f}% of patches changed)")
    a.set_xscale("log", base=2)
    a.set_xlabel("frames per batch")
    a.set_ylabel("encoder frames/s")
    a.legend()
    a.grid(alpha=0.3)
    names = [r["lm"] for r in res["llm"]]
    x = range(len(names))
    b.bar([i - 0.2 for i in x], [r["uncompressed"]["query_ms"] for r in res["llm"]], 0.4, label="uncompressed")
    b.bar([i + 0.2 for i in x], [r["compressed"]["query_ms"] for r in res["llm"]], 0.4,
          label=f"compressed ({100 * res['keep']:.0f}% + live frame)")
    b.set_xticks(list(x), names)
    b.set_ylabel(f"query latency, prefill + {res['answer_tokens']} tokens (ms)")
    b.legend()
    b.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{res['device']}, {res['dtype']}, random weights")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_bench_gpu(args: argparse.Namespace) -> int:
    if not args.tiny and not torch.cuda.is_available():
        print("bench gpu needs a CUDA GPU (--tiny runs the tiny shapes on the CPU)", file=sys.stderr)
        return 2
    res = bench_gpu(tiny=args.tiny, batches=args.batches, lms=args.lms, frames=args.frames, keep=args.keep,
                    changed=args.changed, answer_tokens=args.answer_tokens, repeats=args.repeats,
                    progress=not args.quiet)
    print(f"{res['device']} ({res['dtype']}), {res['seconds']} s")
    print(f"{'batch':>6}{'whole f/s':>11}{'diff f/s':>10}{'recomputed':>12}")
    for r in res["encoder"]:
        print(f"{r['batch']:>6}{r['full_frames_per_s']:>11.1f}{r['differential_frames_per_s']:>10.1f}"
              f"{100 * r['recomputed_share']:>11.0f}%")
    for r in res["llm"]:
        u, c = r["uncompressed"], r["compressed"]
        print(f"LM {r['lm']}: prefill {u['prefill_ms']:.1f} ms ({u['visual_tokens']} visual tokens) vs {c['prefill_ms']:.1f} ms "
              f"({c['visual_tokens']}); decode {u['decode_ms_per_token']:.2f} vs {c['decode_ms_per_token']:.2f} ms/token; "
              f"query {u['query_ms']:.1f} vs {c['query_ms']:.1f} ms")
    for c in res["cameras_per_gpu"]:
        print(f"cameras per GPU at {c['fps']} processed frames/s: {c['full']} whole, {c['differential']} differential")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    if args.plot:
        plot_gpu(res, Path(args.plot))
    if args.json:
        print(json.dumps(res))
    return 0


def add_gpu_parser(what) -> None:
    q = what.add_parser("gpu", help="on a CUDA GPU: encoder frames/s by batch (whole and differential), LLM prefill "
                                    "and decode compressed vs uncompressed (0.5B and 7B shapes), cameras per GPU")
    q.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",") if x], default=list(BATCHES))
    q.add_argument("--lms", nargs="+", default=["0.5b", "7b"], choices=["0.5b", "7b"])
    q.add_argument("--frames", type=int, default=32, help="frames in a query's window")
    q.add_argument("--keep", type=float, default=0.15, help="share of visual tokens the compressed window keeps")
    q.add_argument("--changed", type=float, default=0.25, help="share of patches a differential frame recomputes")
    q.add_argument("--answer-tokens", type=int, default=16)
    q.add_argument("--repeats", type=int, default=3)
    q.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (the test; figures meaningless)")
    q.add_argument("--out", default="", help="also write the JSON here")
    q.add_argument("--plot", default="", help="also draw the figures here (PNG)")
    q.add_argument("--json", action="store_true", help="also print one JSON object as the last line")
    q.add_argument("-q", "--quiet", action="store_true")
    q.set_defaults(func=cmd_bench_gpu)
