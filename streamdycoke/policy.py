"""Per-frame token budgets: the :class:`Policy` protocol, its training-free default and PolicyNet.

A policy sees a :class:`FrameContext` (how similar each position of the new frame is to what the
stream holds, the pixel change the sampler measured, and where the frame sits in the window) and
returns a :class:`PolicyDecision`: the fraction of the frame's tokens to keep and, optionally, a
priority per position. Without a priority the compressor keeps the least similar positions.

Size: over 300 lines by its docstrings; its code (the protocol, the training-free default and the net) is
under 300.
"""

from __future__ import annotations

import dataclasses
import math
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
    "PolicyDecision",
    "PolicyNet",
    "PolicySpec",
    "ThresholdPolicy",
    "build_policy",
    "frame_features",
    "load_policy",
    "token_features",
]

# Dissimilarity levels (1 - cosine) at which the fraction of changed positions is measured.
_LEVELS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
_QUANTILES = (0.5, 0.75, 0.9, 0.97)
FEATURE_NAMES = (
    ["dissim_mean", "dissim_std", "dissim_max"]
    + [f"frac_dissim_gt_{lv}" for lv in _LEVELS]
    + [f"dissim_q{q}" for q in _QUANTILES]
    + ["pixel_change", "window_phase", "log_rate"]
)
TOKEN_FEATURE_NAMES = ("log_dissim_held", "log_dissim_prev", "log_dissim_held_minus_prev", "window_phase", "log_rate")
_EPS = 1e-8


@dataclass(frozen=True)
class FrameContext:
    """What a policy may look at for one frame.

    Attributes:
        similarity: ``(N,)`` cosine between each new token and the token the stream holds there.
        pixel_change: mean absolute pixel change the frame sampler measured, in [0, 1].
        frames_since_keyframe: frames since the last keyframe (1 for the frame after it).
        window: the stream's window W (a keyframe comes at least every W frames).
        prev_similarity: ``(N,)`` cosine to the previous processed frame at each position, given
            only to policies that set ``uses_previous_frame``.
    """

    similarity: torch.Tensor
    pixel_change: float
    frames_since_keyframe: int
    window: int
    prev_similarity: torch.Tensor | None = None


@dataclass(frozen=True)
class PolicyDecision:
    """``keep_ratio`` of the frame's tokens to keep; ``priority`` ``(N,)`` (higher kept first) or None
    for "least similar first"."""

    keep_ratio: float
    priority: torch.Tensor | None = None


@runtime_checkable
class Policy(Protocol):
    def decide(self, ctx: FrameContext) -> PolicyDecision:
        """How many of the frame's tokens to keep, and optionally which first."""


@dataclass(frozen=True)
class ThresholdPolicy:
    """Training-free default: keep every position whose token drifted below ``similarity_threshold``.

    A still scene keeps (almost) nothing and a moving one keeps what moved; every position the
    stream holds stays within cosine ``similarity_threshold`` of the current frame, unless a cap
    (:class:`PolicySpec`'s ``max_keep_ratio``) limits the frame.
    """

    similarity_threshold: float = 0.9

    def decide(self, ctx: FrameContext) -> PolicyDecision:
        return PolicyDecision(float((ctx.similarity < self.similarity_threshold).float().mean()))


@dataclass(frozen=True)
class FixedRatioPolicy:
    """Keep the same fraction of every judged frame (DyCoke's rule: ``keep_ratio = 1 - K``)."""

    ratio: float

    def decide(self, ctx: FrameContext) -> PolicyDecision:
        return PolicyDecision(self.ratio)


def frame_features(
    similarity: torch.Tensor,
    pixel_change: torch.Tensor,
    frames_since_keyframe: torch.Tensor,
    window: int,
    log_rate: torch.Tensor,
) -> torch.Tensor:
    """Cheap per-frame features, batched.

    Args:
        similarity: ``(B, N)`` per-position cosine to the held tokens.
        pixel_change: ``(B,)``.
        frames_since_keyframe: ``(B,)``.
        window: W.
        log_rate: ``(B,)`` log of the price of a token (see :class:`PolicyNet`).

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
            log_rate.to(e.dtype).unsqueeze(1),
        ],
        dim=1,
    )


def token_features(
    log_dissim: torch.Tensor, log_dissim_prev: torch.Tensor, phase: torch.Tensor, log_rate: torch.Tensor
) -> torch.Tensor:
    """Per-position features, batched: ``(B, N)`` log dissimilarities to the held token and to the
    previous frame, ``(B,)`` window phase and log rate -> ``(B, N, 5)`` (roughly unit scale)."""
    B, N = log_dissim.shape
    return torch.stack(
        [
            log_dissim / 5, log_dissim_prev / 5, (log_dissim - log_dissim_prev) / 5,
            phase.unsqueeze(1).expand(B, N), log_rate.unsqueeze(1).expand(B, N) / 3,
        ],
        dim=-1,
    )


def _mlp(n_in: int, hidden: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
    nn.init.zeros_(mlp[-1].weight)  # start as the identity correction: the untrained net is the default
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class PolicyNet(nn.Module):
    """Learned budget: small MLPs that set each frame's threshold and each position's priority.

    Trained on the rate-distortion objective ``(1 - fidelity) + rate * keep_ratio``, where ``rate``
    is the price of one token in fidelity. Frame by frame, the myopic optimum of that objective
    keeps every position whose dissimilarity ``e = 1 - cosine`` exceeds ``rate``: the
    training-free :class:`ThresholdPolicy`. The net refines it:

    - a *frame head* gives the frame's threshold ``log theta = log rate + f(frame features)``;
    - a *token head* gives each position's score ``log e + g(token features)``, where the token
      features add the dissimilarity to the previous frame: a change that has already settled is
      worth refreshing (it will last), a moving edge less so;
    - the frame keeps the positions whose score exceeds ``log theta``: that count is its budget,
      and the scores rank them.

    Both last layers start at zero, so an untrained net *is* the default. 6,658 parameters
    (under 50k). A target keep ratio maps to a rate through ``calibration``: ``(log rate, keep
    ratio)`` pairs measured on the training videos and stored in the checkpoint.

    Args:
        hidden: width of the frame head's hidden layers (the token head uses half).
        rate: the token price in use.
    """

    uses_previous_frame = True

    def __init__(self, hidden: int = 64, rate: float = 0.1) -> None:
        super().__init__()
        self.hidden = hidden
        self.rate = rate
        self.frame_head = _mlp(len(FEATURE_NAMES), hidden)
        self.token_head = _mlp(len(TOKEN_FEATURE_NAMES), hidden // 2)
        # Frame-feature normalisation, fitted on training data and saved with the net.
        self.register_buffer("feat_mean", torch.zeros(len(FEATURE_NAMES)))
        self.register_buffer("feat_std", torch.ones(len(FEATURE_NAMES)))
        # (log rate, keep ratio) pairs, log rate increasing; empty until calibrated.
        self.register_buffer("calibration", torch.zeros(0, 2))

    def forward(
        self, similarity: torch.Tensor, prev_similarity: torch.Tensor, pixel_change: torch.Tensor,
        frames_since_keyframe: torch.Tensor, window: int, log_rate: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched: ``(B, N)`` similarities, ``(B,)`` scalars -> ``(B, N)`` scores and ``(B,)`` log
        threshold; a position is kept when its score exceeds the threshold."""
        feats = frame_features(similarity, pixel_change, frames_since_keyframe, window, log_rate)
        z = (feats - self.feat_mean) / self.feat_std
        log_theta = log_rate + self.frame_head(z).squeeze(-1).clamp(-6.0, 6.0)
        log_e = (1.0 - similarity).clamp_min(_EPS).log()
        log_p = (1.0 - prev_similarity).clamp_min(_EPS).log()
        phase = frames_since_keyframe.to(log_e.dtype) / window
        tf = token_features(log_e, log_p, phase, log_rate)
        score = log_e + self.token_head(tf).squeeze(-1).clamp(-6.0, 6.0)
        return score, log_theta

    @torch.no_grad()
    def decide(self, ctx: FrameContext) -> PolicyDecision:
        prev = ctx.prev_similarity if ctx.prev_similarity is not None else ctx.similarity
        score, log_theta = self.forward(
            ctx.similarity.unsqueeze(0), prev.unsqueeze(0), torch.tensor([ctx.pixel_change]),
            torch.tensor([ctx.frames_since_keyframe]), ctx.window, torch.tensor([math.log(self.rate)]),
        )
        keep = score[0] > log_theta[0]
        return PolicyDecision(float(keep.float().mean()), score[0])

    def with_rate(self, rate: float) -> "PolicyNet":
        """Set the token price (in place) and return self."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        return self

    def with_target(self, target_keep_ratio: float) -> "PolicyNet":
        """Set the rate that gave ``target_keep_ratio`` on the training videos (in place); return self."""
        if not 0.0 < target_keep_ratio <= 1.0:
            raise ValueError(f"target_keep_ratio must be in (0, 1], got {target_keep_ratio}")
        cal = self.calibration
        if cal.shape[0] < 2:
            raise ValueError("this PolicyNet has no calibration table; use with_rate()")
        log_rate, keep = cal[:, 0].tolist(), cal[:, 1].tolist()  # keep decreases as the rate grows
        if target_keep_ratio >= keep[0]:
            return self.with_rate(math.exp(log_rate[0]))
        for i in range(1, len(keep)):
            if target_keep_ratio >= keep[i]:
                w = (keep[i - 1] - target_keep_ratio) / max(1e-12, keep[i - 1] - keep[i])
                return self.with_rate(math.exp(log_rate[i - 1] + w * (log_rate[i] - log_rate[i - 1])))
        return self.with_rate(math.exp(log_rate[-1]))

    def save(self, path: str | Path, **meta: object) -> None:
        """Write a checkpoint: weights, width, rate, calibration and free-form metadata (plain types only)."""
        torch.save(
            {"format": "streamdycoke.PolicyNet/4", "hidden": self.hidden, "rate": self.rate,
             "state_dict": self.state_dict(), "meta": meta},
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> "PolicyNet":
        """Load a checkpoint written by :meth:`save` (``weights_only``: no code is unpickled)."""
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or ckpt.get("format") != "streamdycoke.PolicyNet/4":
            raise ValueError(f"{path} is not a StreamDyCoke PolicyNet checkpoint (format 4)")
        net = cls(hidden=int(ckpt["hidden"]), rate=float(ckpt["rate"]))
        net.calibration = torch.zeros_like(ckpt["state_dict"]["calibration"])
        net.load_state_dict(ckpt["state_dict"])
        net.meta = ckpt.get("meta", {})
        return net.eval()


SHIPPED_NET = Path(__file__).parent / "assets" / "policy_net.pt"


def load_policy(name: str, target_keep_ratio: float | None = None) -> Policy:
    """Build a policy from its name.

    ``"threshold"`` or ``"threshold:0.85"`` (similarity threshold), ``"fixed:0.3"``, ``"net"`` (the
    checkpoint shipped with the package) or a path to a PolicyNet checkpoint; a net runs at its saved
    rate unless ``target_keep_ratio`` is given, which only a net takes.
    """
    kind, _, arg = name.partition(":")
    if kind in ("threshold", "fixed"):
        if target_keep_ratio is not None:
            raise ValueError(f"target_keep_ratio is for a PolicyNet; policy {name!r} does not take one")
        if kind == "threshold":
            return ThresholdPolicy(float(arg)) if arg else ThresholdPolicy()
        if not arg:
            raise ValueError("fixed policy needs a ratio, e.g. fixed:0.3")
        return FixedRatioPolicy(float(arg))
    path = SHIPPED_NET if name == "net" else Path(name)
    if not path.exists():
        raise ValueError(f"unknown policy {name!r}: not threshold[:T], fixed:R, net, or an existing checkpoint")
    net = PolicyNet.load(path)
    return net.with_target(target_keep_ratio) if target_keep_ratio is not None else net


@dataclass(frozen=True)
class PolicySpec:
    """Which policy sets each frame's token budget.

    Attributes:
        name: ``threshold`` or ``threshold:SIM`` (training-free default), ``fixed:RATIO``, ``net``
            (the shipped PolicyNet) or a PolicyNet checkpoint path.
        target_keep_ratio: for a PolicyNet: the keep ratio to aim at (else its saved rate).
        max_keep_ratio: the most of any judged frame's tokens kept, whatever the policy says.
    """

    name: str = "threshold"
    target_keep_ratio: float | None = None
    max_keep_ratio: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.max_keep_ratio <= 1.0:
            raise ValueError(f"max_keep_ratio must be in (0, 1], got {self.max_keep_ratio}")
        if self.target_keep_ratio is not None and not 0.0 < self.target_keep_ratio <= 1.0:
            raise ValueError(f"target_keep_ratio must be in (0, 1], got {self.target_keep_ratio}")
        kind, _, arg = self.name.partition(":")
        if kind in ("threshold", "fixed"):
            try:
                value = float(arg) if arg else None
            except ValueError:
                raise ValueError(f"policy {self.name!r}: {arg!r} is not a number") from None
            if kind == "fixed" and (value is None or not 0.0 <= value <= 1.0):
                raise ValueError(f"policy {self.name!r}: fixed needs a ratio in [0, 1], e.g. fixed:0.3")
            if self.target_keep_ratio is not None:
                raise ValueError(f"target_keep_ratio is for a PolicyNet; policy {self.name!r} does not take one")


@dataclass(frozen=True)
class CappedPolicy:
    """Any policy with its keep ratio capped at ``max_keep_ratio`` (the priorities are the policy's)."""

    policy: Policy
    max_keep_ratio: float

    @property
    def uses_previous_frame(self) -> bool:
        return bool(getattr(self.policy, "uses_previous_frame", False))

    def decide(self, ctx: FrameContext) -> PolicyDecision:
        d = self.policy.decide(ctx)
        return dataclasses.replace(d, keep_ratio=min(d.keep_ratio, self.max_keep_ratio))


def build_policy(spec: PolicySpec | None = None) -> Policy:
    """The policy ``spec`` names, capped at its ``max_keep_ratio``."""
    spec = spec or PolicySpec()
    policy = load_policy(spec.name, spec.target_keep_ratio)
    return policy if spec.max_keep_ratio >= 1.0 else CappedPolicy(policy, spec.max_keep_ratio)
