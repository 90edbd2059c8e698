"""``streamdycoke eval``: answer accuracy against token budget, every method side by side.

1. Generate and encode the event streams (train / val / test, disjoint objects and backgrounds) with
   the pretrained EfficientNet-Lite0 (cached under ``--cache-dir``).
2. Train the event-QA answerer on uncompressed training streams (or load ``--answerer``).
3. On the test streams: accuracy of the answerer on the uncompressed streams and on what each method
   keeps at each budget, with a 95% bootstrap interval over streams, and the paired difference to
   uncompressed; plus zero-shot ImageNet top-1 agreement between each frame and what the compressed
   stream holds at that frame (every frame in, skipped ones included), on the test streams and on
   the real sample clips.

Long streams (``--frames`` above ``--train-frames``, e.g. 300 frames, a minute at 5 fps: the generator's
few visits, cut, lighting change and shake spread over it, so most frames are still) are read as a live
camera is: each question through the kept tokens of its last ``--read-window`` frames, then the live
frame whole (the question's frame; a streaming method's newest processed frame), as every reader reads
(:mod:`streamdycoke.reading`). The streaming methods run once over the whole stream; the offline ones,
which need a clip, run on each question's window.

Size: the whole eval (streams, answerers, methods at matched budgets, intervals, report) reads as one
procedure in the order it runs; the parts that stand alone are modules of their own (:mod:`.matched`,
:mod:`.methods`, :mod:`.data`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..encoders import EncoderSpec, build_encoder
from .answerer import EventQA, predict, train_answerer
from .data import EncodedStream, encode_streams, object_references
from .matched import matched_keeps, stored_share, training_masks
from .methods import METHODS, LiveMask, held_index, keep_mask, mask_of
from .questions import scene_questions
from .scenes import Imagery, SceneSpec

__all__ = ["add_eval_parser", "bootstrap", "evaluate_methods", "topk_agreement"]

BUDGETS = (0.05, 0.10, 0.15, 0.25, 0.35, 0.50)
DEFAULT_ANSWERER = "runs/eval/answerer.pt"
# Scored question kinds. "scene_change", "count" and "first" are generated but not scored: the answerer
# was near chance on them uncompressed (49, 53 and 58% in docs/eval.json of 2026-11), so they added noise,
# not signal, to every comparison.
SCORED_KINDS = ("present", "appeared")
PER_KIND = 12  # questions of each scored kind per test stream


def bootstrap(per_stream_correct: list[np.ndarray], per_stream_base: list[np.ndarray] | None = None,
              n: int = 2000, seed: int = 0) -> tuple[float, float, float | None, float | None]:
    """Accuracy and its 95% interval half-width, resampling streams (questions about one stream are
    not independent); with ``per_stream_base``: also the paired difference to it and its half-width."""
    rng = np.random.default_rng(seed)
    c = np.array([x.sum() for x in per_stream_correct], dtype=np.float64)
    m = np.array([len(x) for x in per_stream_correct], dtype=np.float64)
    acc = c.sum() / m.sum()
    idx = rng.integers(0, len(c), size=(n, len(c)))
    boots = c[idx].sum(1) / m[idx].sum(1)
    half = float(np.percentile(boots, 97.5) - np.percentile(boots, 2.5)) / 2
    if per_stream_base is None:
        return float(acc), half, None, None
    b = np.array([x.sum() for x in per_stream_base], dtype=np.float64)
    d = (c[idx].sum(1) - b[idx].sum(1)) / m[idx].sum(1)
    return float(acc), half, float((c.sum() - b.sum()) / m.sum()), float(np.percentile(d, 97.5) - np.percentile(d, 2.5)) / 2


@torch.no_grad()
def topk_agreement(encoder, streams: list[EncodedStream], keeps: list[torch.Tensor] | None,
                   live_top1: list[torch.Tensor] | None = None) -> tuple[float, list[torch.Tensor]]:
    """Share of frames (all frames in) where the ImageNet head's top-1 on what the stream holds equals
    its top-1 on the live frame. ``keeps=None`` gives the live top-1s (agreement 1)."""
    tops, agree, total = [], 0, 0
    for i, s in enumerate(streams):
        tok = s.tokens.float()
        if keeps is not None:
            h = held_index(mask_of(keeps[i]))  # (T, N)
            tok = tok[h.clamp_min(0), torch.arange(tok.shape[1]).unsqueeze(0)]
        top = encoder.classify(tok).argmax(-1)
        tops.append(top)
        if live_top1 is not None:
            agree += int((top == live_top1[i]).sum())
            total += len(top)
    return (agree / total if total else 1.0), tops


def evaluate_methods(
    model: EventQA | list[EventQA], encoder, refs, test: list[EncodedStream], *, methods=METHODS, budgets=BUDGETS,
    nets: dict | None = None, window: int = 16, per_kind: int = PER_KIND, seed: int = 0,
    real: list[EncodedStream] | None = None, progress: bool = True, kinds: tuple[str, ...] = SCORED_KINDS,
    read_window: int | None = None,
) -> dict:
    """The whole comparison; see the module docstring. Returns the JSON-ready result. With several
    answerers (trained with different seeds), the figures are the first one's and ``seeds`` gives each
    answerer's accuracy and delta per method and budget, and their spread. ``read_window``: long streams,
    each question read through the window of its last ``read_window`` frames (offline methods run on
    that window; the uncompressed reading is the window whole); top-1 agreement is then left out for
    the offline methods (they hold no single mask per stream)."""
    models = model if isinstance(model, list) else [model]
    rng = np.random.default_rng(seed + 12345)
    items = [(s, scene_questions(s.scene, rng, per_kind, kinds)) for s in test]
    answers = [np.array([q.answer for q in qs]) for _, qs in items]
    qkinds = [np.array([q.kind for q in qs]) for _, qs in items]
    split = np.cumsum([len(a) for a in answers])[:-1]

    def per_stream(pred: np.ndarray) -> list[np.ndarray]:
        return [p == a for p, a in zip(np.split(pred, split), answers)]

    def by_kind(correct: list[np.ndarray]) -> dict:
        allc, allk = np.concatenate(correct), np.concatenate(qkinds)
        return {k: round(float(allc[allk == k].mean()), 4) for k in kinds if (allk == k).any()}

    bases = [per_stream(predict(m, items, refs, read_window=read_window)) for m in models]
    base = bases[0]
    acc0, ci0, _, _ = bootstrap(base)
    seeds = [{"uncompressed_accuracy": round(bootstrap(b)[0], 4), "uncompressed_by_kind": by_kind(b), "results": []}
             for b in bases]
    _, live_tops = topk_agreement(encoder, test, None)
    real_tops = topk_agreement(encoder, real, None)[1] if real else None
    results = []
    for method in methods:
        for r in budgets:
            t0 = time.perf_counter()
            net = (nets or {}).get(method)
            kind = "stream-net" if method.startswith("stream-net") else method
            keeps, share = matched_keeps(kind, test, items, r, net=net, window=window, read_window=read_window)
            stored = stored_share(keeps, items)
            per_stream_masks = all(isinstance(k, (torch.Tensor, LiveMask)) for k in keeps)
            for i, (m, b) in enumerate(zip(models, bases)):
                c = per_stream(predict(m, items, refs, keeps, read_window=read_window))
                a, _, d, _ = bootstrap(c, b)
                seeds[i]["results"].append({"method": method, "target": r, "accuracy": round(a, 4), "delta": round(d, 4),
                                            "by_kind": by_kind(c)})
                if i == 0:
                    correct = c
            acc, ci, delta, dci = bootstrap(correct, base)
            row = {"method": method, "target": r, "keep_ratio": round(share, 4), "stored_ratio": round(stored, 4),
                   "accuracy": round(acc, 4), "ci95": round(ci, 4), "delta": round(delta, 4),
                   "delta_ci95": round(dci, 4), "by_kind": by_kind(correct),
                   "top1_agreement": (round(topk_agreement(encoder, test, keeps, live_tops)[0], 4)
                                      if per_stream_masks else None)}
            if len(models) > 1:
                accs = [sd["results"][-1]["accuracy"] for sd in seeds]
                deltas = [sd["results"][-1]["delta"] for sd in seeds]
                row["seed_accuracy_range"] = [min(accs), max(accs)]
                row["seed_delta_range"] = [min(deltas), max(deltas)]
            if real:
                rk = [mask_of(keep_mask(kind, s, r, net=net, window=window)) for s in real]
                row["real_keep_ratio"] = round(sum(int(k.sum()) for k in rk) / sum(k.numel() for k in rk), 4)
                row["real_top1_agreement"] = round(topk_agreement(encoder, real, rk, real_tops)[0], 4)
            results.append(row)
            if progress:
                spread = (f" seeds Δ {row['seed_delta_range'][0]:+.4f}..{row['seed_delta_range'][1]:+.4f}"
                          if "seed_delta_range" in row else "")
                top1 = "-" if row["top1_agreement"] is None else f"{row['top1_agreement']:.3f}"
                print(f"  {method:<10} r={r:.2f} read {share:.3f} (stored {stored:.3f}) acc {acc:.4f} ±{ci:.4f} "
                      f"(Δ {delta:+.4f} ±{dci:.4f}){spread} top-1 agree {top1}"
                      f" [{time.perf_counter() - t0:.1f}s]", file=sys.stderr, flush=True)
    return {"uncompressed_accuracy": round(acc0, 4), "uncompressed_ci95": round(ci0, 4),
            "uncompressed_by_kind": by_kind(base), "kinds": list(kinds),
            "questions": int(sum(len(a) for a in answers)), "streams": len(test), "read_window": read_window,
            "results": results,
            **({"seeds": seeds} if len(models) > 1 else {})}


def real_streams(encoder, clip_dir: Path, cache_dir: Path, max_frames: int, progress: bool = True) -> list[EncodedStream]:
    """The real sample clips (every frame up to ``max_frames``) encoded, cached; [] when offline."""
    from ..samples import real_clips
    from ..sampler import thumbnail
    from ..video import decode_frames

    out = []
    for path in real_clips(clip_dir):
        cache = cache_dir / f"real_{encoder.name}_{path.stem}_{max_frames}.pt"
        if cache.exists():
            d = torch.load(cache, map_location="cpu", weights_only=True)
            out.append(EncodedStream(None, d["tokens"], d["thumbs"].numpy(), d["times"].tolist(), path.stem))
            continue
        frames, times = [], []
        for fr in decode_frames(str(path), size=encoder.input_size):
            if fr.index >= max_frames:
                break
            frames.append(fr.rgb)
            times.append(fr.timestamp)
        arr = np.stack(frames)
        thumbs = np.stack([thumbnail(f) for f in arr])
        toks = torch.cat([encoder.encode(arr[i:i + 20]) for i in range(0, len(arr), 20)]).half()
        cache_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"tokens": toks, "thumbs": torch.from_numpy(thumbs), "times": torch.tensor(times)}, cache)
        out.append(EncodedStream(None, toks, thumbs, times, path.stem))
        if progress:
            print(f"encoded real clip {path.name}: {len(arr)} frames", file=sys.stderr)
    return out


def _seed_path(path: Path, i: int) -> Path:
    """The answerer checkpoint of the ``i``-th seed: ``path`` itself for the first."""
    return path if i == 0 else path.with_name(f"{path.stem}_s{i}{path.suffix}")


SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "event_qa.pt"  # seed 0; seed i: event_qa_s{i}.pt


def _shipped(i: int) -> Path | None:
    """The shipped answerer of seed ``i`` (the answerers ``docs/eval.json`` was made with), if there is one."""
    p = _seed_path(SHIPPED, i)
    return p if p.exists() else None


def plot_eval(result: dict, path: Path) -> None:
    """Accuracy (95% intervals) against the share of tokens read, per method; then per scored kind; then
    ImageNet top-1 agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = result.get("kinds") or list(result["uncompressed_by_kind"])
    fig, axes = plt.subplots(1, 2 + len(kinds), figsize=(5.2 * (2 + len(kinds)), 4.5))
    colors = {}
    for method in dict.fromkeys(r["method"] for r in result["results"]):
        rows = [r for r in result["results"] if r["method"] == method]
        x = [100 * r["keep_ratio"] for r in rows]
        line = axes[0].errorbar(x, [100 * r["accuracy"] for r in rows], yerr=[100 * r["ci95"] for r in rows],
                                marker="o", capsize=3, label=method)
        colors[method] = line[0].get_color()
        for ax, k in zip(axes[1:], kinds):
            ax.plot(x, [100 * r["by_kind"][k] for r in rows], marker="o", color=colors[method], label=method)
        top = [(xi, 100 * r["top1_agreement"]) for xi, r in zip(x, rows) if r["top1_agreement"] is not None]
        if top:
            axes[-1].plot(*zip(*top), marker="o", color=colors[method], label=method)
    u = result["uncompressed_accuracy"]
    axes[0].axhline(100 * u, color="k", ls="--", lw=1, label="uncompressed")
    axes[0].axhline(100 * (u - 0.01), color="k", ls=":", lw=1, label="uncompressed − 1 pt")
    axes[0].set_ylabel("event-QA accuracy, test split (%)")
    for ax, k in zip(axes[1:], kinds):
        ax.axhline(100 * result["uncompressed_by_kind"][k], color="k", ls="--", lw=1, label="uncompressed")
        ax.set_ylabel(f"accuracy on '{k}' questions (%)")
    axes[-1].set_ylabel("ImageNet top-1 agreement, held vs live frame (%)")
    for ax in axes:
        ax.set_xlabel("tokens read (% of every frame in; now frames included)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"EfficientNet-Lite0 tokens, {result['streams']} test streams, {result['questions']} questions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _training_steps(text: str) -> int:
    n = int(text)
    if n < 3:
        raise argparse.ArgumentTypeError(f"at least 3 training steps, got {n}")
    return n


def cmd_eval(args: argparse.Namespace) -> int:
    from ..policy import load_policy

    torch.set_num_threads(max(1, torch.get_num_threads()))
    progress = not args.quiet
    cache = Path(args.cache_dir)
    encoder = build_encoder(EncoderSpec("efficientnet-lite0"))
    spec = SceneSpec(frames=args.frames)
    train_spec = SceneSpec(frames=args.train_frames)  # the answerer learns on short streams; long ones are read
    read_window = None if args.frames <= args.train_frames else min(args.read_window, args.train_frames)
    imagery = None
    if args.objects or args.backgrounds:  # a user's pictures for the test streams; the answerer is never trained on them
        imagery = Imagery.from_dirs(args.objects or None, args.backgrounds or None)
    test = encode_streams(encoder, "test", list(range(args.test)), spec=spec, cache_dir=cache / "streams",
                          progress=progress, imagery=imagery)
    refs = object_references(encoder, imagery=imagery)
    paths = [_seed_path(Path(args.answerer), i) if args.answerer else None for i in range(args.seeds)]
    models: list[EventQA] = []
    train = masks = val = None
    for i, path in enumerate(paths):
        if path is not None and path.exists() and not args.retrain:
            models.append(EventQA.load(path))
            continue
        if path is not None and not args.retrain and args.answerer == DEFAULT_ANSWERER and _shipped(i) is not None:
            # the default checkpoint is missing: the shipped answerers of the published figures (--retrain trains)
            if progress:
                print(f"answerer seed {i}: the shipped {_shipped(i).name} (--retrain to train it)", file=sys.stderr)
            models.append(EventQA.load(_shipped(i)))
            continue
        if train is None:
            train = encode_streams(encoder, "train", list(range(args.train)), spec=train_spec, cache_dir=cache / "streams",
                                   progress=progress)
            rng = np.random.default_rng(args.seed + 999)
            val_streams = encode_streams(encoder, "val", list(range(args.val)), spec=train_spec, cache_dir=cache / "streams",
                                         progress=progress)
            val = [(s, scene_questions(s.scene, rng, 4, SCORED_KINDS)) for s in val_streams]
            masks = training_masks(train, window=args.window, seed=args.seed, progress=progress) if args.mask_share > 0 else None
        model, history = train_answerer(train, refs, steps=args.steps, seed=args.seed + i, progress=progress, val=val,
                                        token_dropout=args.token_dropout, kinds=SCORED_KINDS, masks=masks,
                                        mask_share=args.mask_share)
        model.meta = {"steps": args.steps, "train_streams": args.train, "frames": args.train_frames, "seed": args.seed + i,
                      "token_dropout": args.token_dropout, "mask_share": args.mask_share,
                      "kinds": list(SCORED_KINDS), "final_loss": history[-1]["loss"],
                      "val_accuracy": [h["val_accuracy"] for h in history if "val_accuracy" in h]}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            model.save(path, **model.meta)
        models.append(model)
    model = models[0]
    net = load_policy(args.net) if "stream-net" in args.methods else None
    nets = {"stream-net": net}
    methods = list(args.methods)
    if args.task_net:
        nets["stream-net-task"] = load_policy(args.task_net)
        methods.append("stream-net-task")
    real = real_streams(encoder, Path(args.real_dir), cache, args.real_frames, progress) if args.real else []
    result = evaluate_methods(models, encoder, refs, test, methods=methods, budgets=args.budgets, nets=nets,
                              window=args.window, seed=args.seed, real=real, progress=progress,
                              read_window=read_window, per_kind=args.per_kind)
    meta = model.meta
    result.update({"answerer": {k: meta.get(k) for k in ("steps", "train_streams", "token_dropout", "mask_share",
                                                         "val_accuracy")},
                   "answerer_seeds": [m.meta.get("seed") for m in models],
                   "encoder": encoder.name, "frames_per_stream": args.frames, "policy_net": args.net, "task_net": args.task_net or None,
                   "real_clips": [s.name for s in real],
                   "imagery": None if imagery is None else {"objects": sorted(imagery.object_names()),
                                                            "backgrounds": sorted(imagery.background_names()),
                                                            "fingerprint": imagery.fingerprint}})
    print(f"uncompressed accuracy {result['uncompressed_accuracy']:.4f} ±{result['uncompressed_ci95']:.4f} "
          f"({result['questions']} questions on {result['streams']} test streams)")
    print(f"{'method':<16}{'target':>7}{'kept':>7}{'accuracy':>10}{'±ci95':>8}{'Δ':>8}{'top-1':>7}{'real top-1':>11}")
    for r in result["results"]:
        print(f"{r['method']:<16}{r['target']:>7.2f}{r['keep_ratio']:>7.3f}{r['accuracy']:>10.4f}{r['ci95']:>8.4f}"
              f"{r['delta']:>+8.4f}{r['top1_agreement'] or float('nan'):>7.3f}"
              f"{r.get('real_top1_agreement', float('nan')):>11.3f}")
    if args.plot:
        plot_eval(result, Path(args.plot))
        print(f"plot: {args.plot}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
    return 0


def _ratios(text: str) -> list[float]:
    vals = [float(v) for v in text.split(",") if v]
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"budgets must be comma-separated shares in (0, 1], got {text!r}")
    return vals


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="answer accuracy against token budget: every method on the event-QA benchmark")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--budgets", type=_ratios, default=list(BUDGETS), help="comma-separated token shares")
    p.add_argument("--train", type=int, default=400, help="training streams")
    p.add_argument("--val", type=int, default=24, help="validation streams")
    p.add_argument("--test", type=int, default=240, help="test streams")
    p.add_argument("--frames", type=int, default=40, help="frames per test stream (5 fps); longer than "
                   "--train-frames: a long stream, each question read through its last --read-window frames")
    p.add_argument("--per-kind", type=int, default=PER_KIND, help="questions of each scored kind per test stream")
    p.add_argument("--train-frames", type=int, default=40, help="frames per training / validation stream")
    p.add_argument("--read-window", type=int, default=40, help="frames a question on a long stream reads "
                   "(its window; at most --train-frames, what the answerer learned on), plus the now frame")
    p.add_argument("--steps", type=_training_steps, default=3000, help="answerer training steps (at least 3)")
    p.add_argument("--token-dropout", type=float, default=0.5, help="training augmentation: drop up to this share of slots")
    p.add_argument("--mask-share", type=float, default=0.5, help="share of training questions read through a "
                   "compressed version of their (training) stream, of uniform / ttm / evs / stream at random budgets")
    p.add_argument("--seeds", type=int, default=2, help="answerers trained with this many seeds; figures are the "
                   "first's, the spread over all is reported")
    p.add_argument("--window", type=int, default=16, help="the streaming compressor's W")
    p.add_argument("--net", default="net", help="PolicyNet for stream-net: 'net' (shipped) or a checkpoint")
    p.add_argument("--task-net", default="", help="also evaluate this task-trained PolicyNet (train-policy "
                   "--objective qa) as method stream-net-task")
    p.add_argument("--answerer", default=DEFAULT_ANSWERER, help="answerer checkpoint (seed i: its _s{i} sibling); "
                   "when the default is missing, the shipped answerers of docs/eval.json are used; another "
                   "path is trained when missing")
    p.add_argument("--retrain", action="store_true", help="train the answerer even if the checkpoint exists")
    p.add_argument("--no-real", dest="real", action="store_false", help="skip the real sample clips")
    p.add_argument("--real-dir", default="runs/videos/real")
    p.add_argument("--real-frames", type=int, default=300)
    p.add_argument("--objects", default="", help="test streams show these pictures as objects instead of the bundled "
                   "test split's: a directory of image files (name = file stem; pasted by alpha where they have one)")
    p.add_argument("--backgrounds", default="", help="test streams over these backgrounds instead of the bundled "
                   "test split's: a directory of images or videos (a video loops under the objects)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default="runs/eval")
    p.add_argument("--plot", default="runs/eval/accuracy_vs_budget.png")
    p.add_argument("--out", default="", help="also write the JSON result here")
    p.add_argument("--json", action="store_true", help="print the result as JSON (last line)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)
