"""Per-frame token budgets: the :class:`Policy` protocol, its training-free default and PolicyNet.

A policy sees a :class:`FrameContext` (how similar each position of the new frame is to what the
stream holds, the pixel change the sampler measured, and where the frame sits in the window) and
returns the fraction of the frame's tokens to keep. Which tokens are kept is not the policy's
choice: the compressor always keeps the least similar ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn

__all__ = [
    "FEATURE_NAMES",
    "FixedRatioPolicy",
    "FrameContext",
    "Policy",
    "PolicyNet",
    "ThresholdPolicy",
    "frame_features",
    "load_policy",
]

# Dissimilarity levels (1 - cosine) at which the fraction of changed positions is measured.
_LEVELS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
_QUANTILES = (0.5, 0.75, 0.9, 0.97)
FEATURE_NAMES = (
    ["dissim_mean", "dissim_std", "dissim_max"]
    + [f"frac_dissim_gt_{lv}" for lv in _LEVELS]
    + [f"dissim_q{q}" for q in _QUANTILES]
    + ["pixel_change", "window_phase", "target_keep_ratio"]
)


@dataclass(frozen=True)
class FrameContext:
    """What a policy may look at for one frame.

    Attributes:
        similarity: ``(N,)`` cosine between each new token and the token the stream holds there.
        pixel_change: mean absolute pixel change the frame sampler measured, in [0, 1].
        frames_since_keyframe: frames since the last keyframe (1 for the frame after it).
        window: the stream's window W (a keyframe comes at least every W frames).
    """

    similarity: torch.Tensor
    pixel_change: float
    frames_since_keyframe: int
    window: int


@runtime_checkable
class Policy(Protocol):
    def keep_ratio(self, ctx: FrameContext) -> float:
        """Fraction in [0, 1] of the frame's tokens to keep."""


@dataclass(frozen=True)
class ThresholdPolicy:
    """Training-free default: keep every position whose token drifted below ``similarity_threshold``.

    A still scene keeps (almost) nothing and a moving one keeps what moved; every position the
    stream holds stays within cosine ``similarity_threshold`` of the current frame, unless
    ``max_keep_ratio`` caps the frame.
    """

    similarity_threshold: float = 0.9
    min_keep_ratio: float = 0.0
    max_keep_ratio: float = 1.0

    def keep_ratio(self, ctx: FrameContext) -> float:
        changed = float((ctx.similarity < self.similarity_threshold).float().mean())
        return min(self.max_keep_ratio, max(self.min_keep_ratio, changed))


@dataclass(frozen=True)
class FixedRatioPolicy:
    """Keep the same fraction of every judged frame (DyCoke's rule: ``keep_ratio = 1 - K``)."""

    ratio: float

    def keep_ratio(self, ctx: FrameContext) -> float:
        return self.ratio


def frame_features(
    similarity: torch.Tensor,
    pixel_change: torch.Tensor,
    frames_since_keyframe: torch.Tensor,
    window: int,
    target_keep_ratio: torch.Tensor,
) -> torch.Tensor:
    """Cheap per-frame features, batched.

    Args:
        similarity: ``(B, N)`` per-position cosine to the held tokens.
        pixel_change: ``(B,)``.
        frames_since_keyframe: ``(B,)``.
        window: W.
        target_keep_ratio: ``(B,)`` the keep ratio the stream aims at.

    Returns:
        ``(B, F)`` with ``F = len(FEATURE_NAMES)``.
    """
    e = (1.0 - similarity).clamp_min(0.0)  # (B, N)
    levels = torch.tensor(_LEVELS, dtype=e.dtype)
    frac = (e.unsqueeze(-1) > levels).float().mean(1)  # (B, L)
    srt = e.sort(dim=1).values
    n = e.shape[1]
    q_idx = torch.tensor([min(n - 1, int(q * n)) for q in _QUANTILES])
    quant = srt[:, q_idx]  # (B, Q)
    phase = frames_since_keyframe.to(e.dtype) / window
    return torch.cat(
        [
            e.mean(1, keepdim=True), e.std(1, keepdim=True, unbiased=False), srt[:, -1:],
            frac, quant,
            pixel_change.to(e.dtype).unsqueeze(1), phase.unsqueeze(1),
            target_keep_ratio.to(e.dtype).unsqueeze(1),
        ],
        dim=1,
    )


class PolicyNet(nn.Module):
    """Learned budget: a small MLP from :func:`frame_features` to a keep ratio.

    It is conditioned on the target keep ratio of the stream, so one checkpoint serves every
    operating point. Under 50k parameters (about 6k with the default width).

    Args:
        hidden: width of the two hidden layers.
        target_keep_ratio: the overall keep ratio (keyframes included) the stream aims at.
    """

    def __init__(self, hidden: int = 64, target_keep_ratio: float = 0.2) -> None:
        super().__init__()
        self.hidden = hidden
        self.target_keep_ratio = target_keep_ratio
        nf = len(FEATURE_NAMES)
        self.mlp = nn.Sequential(
            nn.Linear(nf, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1)
        )
        # Feature normalisation, fitted on training data and saved with the net.
        self.register_buffer("feat_mean", torch.zeros(nf))
        self.register_buffer("feat_std", torch.ones(nf))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` features -> ``(B,)`` keep ratio in (0, 1)."""
        z = (features - self.feat_mean) / self.feat_std
        return torch.sigmoid(self.mlp(z).squeeze(-1))

    @torch.no_grad()
    def keep_ratio(self, ctx: FrameContext) -> float:
        f = frame_features(
            ctx.similarity.unsqueeze(0),
            torch.tensor([ctx.pixel_change]),
            torch.tensor([ctx.frames_since_keyframe]),
            ctx.window,
            torch.tensor([self.target_keep_ratio]),
        )
        return float(self.forward(f))

    def with_target(self, target_keep_ratio: float) -> "PolicyNet":
        """Set the target keep ratio (in place) and return self."""
        if not 0.0 < target_keep_ratio <= 1.0:
            raise ValueError(f"target_keep_ratio must be in (0, 1], got {target_keep_ratio}")
        self.target_keep_ratio = target_keep_ratio
        return self

    def save(self, path: str | Path, **meta: object) -> None:
        """Write a checkpoint: weights, width, target and free-form metadata (plain types only)."""
        torch.save(
            {"format": "streamdycoke.PolicyNet/1", "hidden": self.hidden,
             "target_keep_ratio": self.target_keep_ratio, "state_dict": self.state_dict(), "meta": meta},
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> "PolicyNet":
        """Load a checkpoint written by :meth:`save` (``weights_only``: no code is unpickled)."""
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or ckpt.get("format") != "streamdycoke.PolicyNet/1":
            raise ValueError(f"{path} is not a StreamDyCoke PolicyNet checkpoint")
        net = cls(hidden=int(ckpt["hidden"]), target_keep_ratio=float(ckpt["target_keep_ratio"]))
        net.load_state_dict(ckpt["state_dict"])
        net.meta = ckpt.get("meta", {})
        return net.eval()


def load_policy(spec: str, target_keep_ratio: float | None = None) -> Policy:
    """Build a policy from a CLI-style spec.

    ``"threshold"`` or ``"threshold:0.85"`` (similarity threshold), ``"fixed:0.3"``, ``"net"`` (the
    checkpoint shipped with the package) or a path to a PolicyNet checkpoint.
    """
    name, _, arg = spec.partition(":")
    if name == "threshold":
        return ThresholdPolicy(float(arg)) if arg else ThresholdPolicy()
    if name == "fixed":
        if not arg:
            raise ValueError("fixed policy needs a ratio, e.g. fixed:0.3")
        return FixedRatioPolicy(float(arg))
    path = Path(__file__).parent / "assets" / "policy_net.pt" if spec == "net" else Path(spec)
    if not path.exists():
        raise ValueError(f"unknown policy {spec!r}: not threshold[:T], fixed:R, net, or an existing checkpoint")
    net = PolicyNet.load(path)
    return net.with_target(target_keep_ratio) if target_keep_ratio is not None else net
