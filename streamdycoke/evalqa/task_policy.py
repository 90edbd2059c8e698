"""Train the PolicyNet on the task: the event-QA answerer's loss through the soft keep mask.

The streaming compressor is unrolled softly over a training stream (as in
:func:`streamdycoke.train.train_policy_net`): each position is kept with weight
``sigmoid((score - log theta) / temperature)``. Those weights are the answerer's keep weights
(additive attention bias ``log m``), so the question's cross-entropy is differentiable in the net's
two heads; the answerer is frozen. The loss is ``CE + rate * keep`` with the rate (the price of a
token) drawn log-uniformly per stream and given to the net, as in reconstruction training: one net
serves every budget, and a calibration table maps a target keep ratio to a rate.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import from_options
from ..encoders import EncoderSpec, build_encoder
from ..policy import PolicyNet
from ..train import TokenClip, evaluate, unroll
from ..stream import StreamConfig
from .answerer import EventQA, StreamInputs, build_batch
from .data import EncodedStream, encode_streams, object_references
from .questions import scene_questions
from .scenes import SceneSpec

__all__ = ["stream_clips", "train_policy_on_task"]


def _pixel_change(thumbs: np.ndarray) -> torch.Tensor:
    d = np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2))
    return torch.from_numpy(np.concatenate([[1.0], d]).astype(np.float32))


def stream_clips(streams: list[EncodedStream]) -> list[TokenClip]:
    """The streams as :class:`~streamdycoke.train.TokenClip` (every frame processed), for calibration."""
    out = []
    for i, s in enumerate(streams):
        T, N, _ = s.tokens.shape
        side = int(math.isqrt(N))
        out.append(TokenClip(f"stream-{i}", s.tokens.float(), _pixel_change(s.thumbs), torch.zeros(T, dtype=torch.bool),
                             (side, N // side), T))
    return out


def train_policy_on_task(
    streams: list[EncodedStream], answerer: EventQA, refs: dict[str, torch.Tensor], config: StreamConfig, *,
    steps: int = 300, batch: int = 8, questions_per_stream: int = 4, lr: float = 2e-3, hidden: int = 64,
    rate_range: tuple[float, float] = (0.001, 0.1), temperature: float = 0.05, seed: int = 0, progress: bool = True,
) -> tuple[PolicyNet, list[dict]]:
    """Train a :class:`PolicyNet` on the answerer's loss (module docstring). Returns the net and history."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        for p in answerer.parameters():
            p.requires_grad_(False)
        answerer.eval()
        W = config.window
        xs = torch.stack([F.normalize(s.tokens.float(), dim=-1) for s in streams])  # (S, T, N, D)
        pcs = torch.stack([_pixel_change(s.thumbs) for s in streams])
        cuts = torch.zeros(pcs.shape, dtype=torch.bool)
        inputs = [StreamInputs(answerer, s) for s in streams]
        net = PolicyNet(hidden=hidden)
        lo, hi = math.log(rate_range[0]), math.log(rate_range[1])
        with torch.no_grad():  # feature normalisation from rollouts of the threshold rule
            feats: list[torch.Tensor] = []
            unroll(None, xs, pcs, cuts, lo + (hi - lo) * torch.rand(len(streams)), W, config.scene_cut_similarity,
                   temperature, feats)
            allf = torch.cat(feats)
            net.feat_mean.copy_(allf.mean(0))
            net.feat_std.copy_(allf.std(0).clamp_min(1e-4))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        history = []
        bar = tqdm(range(steps), desc="train policy on the task", unit="step", disable=not progress, file=sys.stderr)
        for step in bar:
            idx = rng.choice(len(streams), size=min(batch, len(streams)), replace=False)
            log_rate = lo + (hi - lo) * torch.rand(len(idx))
            masks: list[torch.Tensor] = []
            unroll(net, xs[idx], pcs[idx], cuts[idx], log_rate, W, config.scene_cut_similarity, temperature, masks=masks)
            m = torch.stack(masks, 1)  # (B, T, N)
            items, owner = [], []
            for j, i in enumerate(idx):
                qs = scene_questions(streams[i].scene, rng, per_kind=1)
                for q in rng.permutation(len(qs))[:questions_per_stream]:
                    items.append((inputs[i], qs[q], m[j]))
                    owner.append(j)
            b = build_batch(answerer, items, refs)
            ce = F.cross_entropy(answerer(b), b.answer, reduction="none")
            per_stream = torch.zeros(len(idx)).index_add(0, torch.tensor(owner), ce) / questions_per_stream
            keep = m.mean((1, 2))
            loss = (per_stream + log_rate.exp() * keep * m.shape[2]).mean()  # price per token of a frame
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec = {"step": step, "loss": float(loss.detach()), "ce": float(ce.mean().detach()), "keep": float(keep.mean().detach())}
            history.append(rec)
            bar.set_postfix(ce=f"{rec['ce']:.3f}", keep=f"{rec['keep']:.3f}")
        net.eval()
        clips = stream_clips(streams)
        table = [[float(r), evaluate(clips, net.with_rate(math.exp(r)), config)["keep_ratio"]]
                 for r in torch.linspace(lo, hi, 11)]
        net.calibration = torch.tensor(table)
        net.with_target(0.15)
        return net, history


def cmd_train_policy_task(args: argparse.Namespace) -> int:
    """``train-policy --objective qa``: train on the event-QA answerer's loss (see
    :mod:`streamdycoke.evalqa.task_policy`), on the benchmark's training streams."""
    if not Path(args.answerer).exists():
        raise ValueError(f"--objective qa needs a trained answerer: {args.answerer} does not exist "
                         "(run `streamdycoke eval` first, it trains and saves one)")
    encoder = build_encoder(EncoderSpec("efficientnet-lite0"))
    answerer = EventQA.load(args.answerer)
    frames = int(answerer.meta.get("frames", 40))
    streams = encode_streams(encoder, "train", list(range(args.qa_streams)), spec=SceneSpec(frames=frames),
                             cache_dir=Path(args.eval_cache) / "streams", progress=not args.quiet)
    config = from_options(StreamConfig, args, prefix="stream_")
    net, history = train_policy_on_task(streams, answerer, object_references(encoder), config, steps=args.steps,
                                        seed=args.seed, progress=not args.quiet)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net.save(out, encoder=encoder.name, window=config.window, steps=args.steps, objective="qa",
             answerer=str(args.answerer), train_streams=args.qa_streams, final_loss=history[-1]["loss"])
    print(f"saved {out} (trained on the event-QA loss; compare it with `streamdycoke eval --task-net {out}`)")
    if args.json:
        print(json.dumps({"checkpoint": str(out), "final_loss": history[-1]["loss"], "final_ce": history[-1]["ce"]}))
    return 0
