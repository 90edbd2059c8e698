"""The streaming compressor: DyCoke's temporal token merging decided frame by frame.

Per stream, the state holds one token per grid position: the one the compressed stream currently
holds there (the last kept token). A new frame is compared position by position with it; the
policy sets how many tokens the frame keeps, the least similar ones are kept and replace the held
ones. A keyframe (all tokens) comes at least every ``window`` frames and on a scene cut, so every
held token is at most ``window - 1`` frames old: each decision looks only inside a bounded sliding
window, and the state is ``O(N * D)`` whatever the stream's length. Under rate control
(``StreamConfig.budget_ratio``) a scene cut is whole only when the token bucket is not in debt, and
``StreamConfig.keyframe_share`` may lengthen the interval: the bound is then
``StreamConfig.keyframe_interval - 1`` frames.

Size: over 300 lines by its docstrings (the shapes and the window's invariants); its code is under 300.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .budget import frame_token_budget
from .policy import FrameContext, Policy, ThresholdPolicy
from .segment import TokenSegment

__all__ = ["StreamCompressor", "StreamConfig", "StreamState", "StreamStats"]

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class StreamConfig:
    """Settings of one stream's compressor.

    Attributes:
        window: W, the most frames between keyframes (the sliding window).
        scene_cut_similarity: a frame whose mean similarity to the held tokens is below this is a
            scene cut and becomes a keyframe.
        token_dtype: dtype of stored tokens, ``"float16"`` or ``"bfloat16"``.
        budget_ratio: rate control (None: off, the policy alone decides how many tokens a frame
            keeps). The stream then keeps this share of the tokens of every frame *in*, frames the
            sampler skipped included: a token bucket gains ``budget_ratio * N`` per frame in,
            keyframes spend ``N`` (the bucket may go negative and is repaid; a scene cut is whole only
            when the bucket is not in debt, else judged), and a judged frame
            spends what the bucket holds (at most ``N``) on the positions the policy ranks first
            (least similar to the held token, by default). The policy's own count is not used: on
            the event-QA benchmark's validation streams (and 20 training streams), capping the threshold policy's count by the
            bucket left a third of a 35% budget unspent (24% kept) with no gain in accuracy per token.
        keyframe_share: under rate control, the most of the budget periodic keyframes may spend: the
            interval between them grows past ``window`` where needed (:attr:`keyframe_interval`), as
            DyCoke TTM's window grows below a 25% budget. None: every ``window`` frames whatever the budget,
            so below ``1 / window`` of the tokens (6.25% at W=16) the keyframes alone overspend it. At 0.5
            the event-QA validation streams (96, tools/eval_variants.py) read 5.9% of their tokens at a 5%
            budget instead of 9.9%, and answered the same at 15 and 25% (within 0.4 points at 10%).
        refresh: under rate control, with the default ranking, a position's rank is its dissimilarity
            to the held token plus ``refresh`` times the held token's age in windows (frames since it
            was kept, over ``window``): stale positions are refreshed a few at a time, not only at
            keyframes. 0: dissimilarity alone.
    """

    window: int = 16
    scene_cut_similarity: float = 0.5
    min_change: float = 0.0
    max_credit_frames: float | None = None
    token_dtype: str = "float16"
    budget_ratio: float | None = None
    refresh: float = 0.0
    keyframe_share: float | None = 0.5

    @property
    def keyframe_interval(self) -> int:
        """The most frames between keyframes: ``window``, grown under rate control so that keyframes
        spend at most ``keyframe_share`` of the budget (``ceil(1 / (keyframe_share * budget_ratio))``)."""
        if self.budget_ratio is None or self.keyframe_share is None:
            return self.window
        return max(self.window, math.ceil(1.0 / (self.keyframe_share * self.budget_ratio) - 1e-9))

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.token_dtype not in _DTYPES:
            raise ValueError(f"token_dtype must be one of {sorted(_DTYPES)}, got {self.token_dtype!r}")
        if not -1.0 <= self.scene_cut_similarity <= 1.0:
            raise ValueError(f"scene_cut_similarity must be in [-1, 1], got {self.scene_cut_similarity}")
        if self.budget_ratio is not None and not 0.0 < self.budget_ratio <= 1.0:
            raise ValueError(f"budget_ratio must be in (0, 1] or None, got {self.budget_ratio}")
        if not 0.0 <= self.refresh:
            raise ValueError(f"refresh must be >= 0, got {self.refresh}")
        if self.keyframe_share is not None and not 0.0 < self.keyframe_share <= 1.0:
            raise ValueError(f"keyframe_share must be in (0, 1] or None, got {self.keyframe_share}")


@dataclass
class StreamStats:
    """Running totals of a stream (fidelity is over processed frames)."""

    frames: int = 0
    keyframes: int = 0
    tokens_in: int = 0
    tokens_kept: int = 0
    fidelity_sum: float = 0.0

    @property
    def keep_ratio(self) -> float:
        return self.tokens_kept / self.tokens_in if self.tokens_in else 0.0

    @property
    def fidelity(self) -> float:
        return self.fidelity_sum / self.frames if self.frames else 1.0


@dataclass
class StreamState:
    """Everything one stream carries from frame to frame; owned by the caller (e.g. a camera actor).

    Attributes:
        stream_id: the stream's id.
        held_unit: ``(N, D)`` unit-normalised token the stream holds per position, or None before
            the first frame.
        held_frame: ``(N,)`` long, frame index each held token comes from.
        prev_unit: ``(N, D)`` unit tokens of the previous processed frame, kept only for policies
            that use it (``uses_previous_frame``).
        grid: ``(H, W)`` of the held tokens.
        frames_since_keyframe: processed frames since the last keyframe.
        last_frame_index: index of the last processed frame (-1 before any).
        credit: tokens the rate controller may still spend (``StreamConfig.budget_ratio``);
            starts at 0 and is not stored with the segments (a resumed stream starts from 0).
        stats: running totals.
    """

    stream_id: str
    held_unit: torch.Tensor | None = None
    held_frame: torch.Tensor | None = None
    prev_unit: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    frames_since_keyframe: int = 0
    last_frame_index: int = -1
    credit: float = 0.0
    stats: StreamStats = field(default_factory=StreamStats)

    def nbytes(self) -> int:
        """Bytes held in tensors: constant once the first frame is in."""
        return sum(t.numel() * t.element_size() for t in (self.held_unit, self.held_frame, self.prev_unit) if t is not None)

    @classmethod
    def from_segments(cls, stream_id: str, segments: list[TokenSegment]) -> "StreamState":
        """Rebuild a stream's state from its stored segments (the last keyframe onward).

        This is how a restarted worker resumes: the held tokens become exactly what the store holds.
        The previous frame's full tokens are not stored; a policy that uses them sees the held
        tokens in their place for the first frame after a resume.
        """
        state = cls(stream_id)
        start = max((i for i, s in enumerate(segments) if s.keyframe), default=None)
        if start is None:
            return state
        for seg in segments[start:]:
            if seg.keyframe:
                state.grid = seg.grid
                state.held_unit = torch.zeros(seg.num_positions, seg.dim)
                state.held_frame = torch.zeros(seg.num_positions, dtype=torch.long)
                state.frames_since_keyframe = 0
            else:
                state.frames_since_keyframe += 1
            state.held_unit[seg.positions] = F.normalize(seg.tokens.float(), dim=-1)
            state.held_frame[seg.positions] = seg.frame_index
            state.last_frame_index = seg.frame_index
        return state


class StreamCompressor:
    """Compresses one stream, one frame at a time.

    Args:
        config: the stream's settings.
        policy: sets each judged frame's keep ratio, and optionally which positions go first
            (default: :class:`ThresholdPolicy`, least similar first).
    """

    def __init__(self, config: StreamConfig | None = None, policy: Policy | None = None) -> None:
        self.config = config or StreamConfig()
        self.policy = policy if policy is not None else ThresholdPolicy()
        self._dtype = _DTYPES[self.config.token_dtype]
        self._uses_prev = bool(getattr(self.policy, "uses_previous_frame", False))

    def new_state(self, stream_id: str) -> StreamState:
        return StreamState(stream_id)

    @torch.no_grad()
    def process(
        self,
        state: StreamState,
        tokens: torch.Tensor,
        grid: tuple[int, int],
        frame_index: int,
        timestamp: float,
        *,
        pixel_change: float = 0.0,
        scene_cut: bool = False,
    ) -> TokenSegment:
        """Decide one frame and update ``state`` in place.

        Args:
            state: the stream's state.
            tokens: ``(N, D)`` the frame's tokens, ``N = grid[0] * grid[1]``.
            grid: ``(H, W)`` token grid.
            frame_index: strictly greater than the last processed one.
            timestamp: capture time in seconds.
            pixel_change: what the frame sampler measured (a policy feature).
            scene_cut: force a keyframe (e.g. the sampler saw a cut).

        Returns:
            The frame's :class:`TokenSegment`: the kept positions (sorted) and tokens.
        """
        n = grid[0] * grid[1]
        if tokens.dim() != 2 or tokens.shape[0] != n:
            raise ValueError(f"tokens must be (N, D) with N = {grid[0]}*{grid[1]} = {n}, got {tuple(tokens.shape)}")
        if not (math.isfinite(timestamp) and timestamp >= 0):
            raise ValueError(f"stream {state.stream_id!r}: frame {frame_index} timestamp {timestamp} is not finite and >= 0")
        if frame_index <= state.last_frame_index:
            raise ValueError(
                f"stream {state.stream_id!r}: frame {frame_index} is not after frame {state.last_frame_index}"
            )
        # Decide on the tokens as they will be stored, so the held state equals what the store
        # holds and a worker rebuilt from the store (StreamState.from_segments) decides identically.
        x = tokens.to(self._dtype)
        xf = x.float()
        norms = torch.linalg.vector_norm(xf, dim=-1)  # (N,); NaN/Inf anywhere in a token shows here
        if not bool(torch.isfinite(norms).all()):
            raise ValueError(f"stream {state.stream_id!r}: frame {frame_index} has non-finite tokens")
        x_unit = xf.div_(norms.clamp_min_(1e-12).unsqueeze(1))
        w = self.config.keyframe_interval
        first = state.held_unit is None or state.grid != grid or state.held_unit.shape[1] != x.shape[1]
        if first:
            sim = None
            keyframe = True
        else:
            sim = (x_unit * state.held_unit).sum(-1)  # (N,)
            keyframe = (
                scene_cut
                or state.frames_since_keyframe + 1 >= w
                or float(sim.mean()) < self.config.scene_cut_similarity
            )
        stats = state.stats
        target = self.config.budget_ratio
        if target is not None:  # frames in since the last processed one, skipped ones included
            state.credit += target * n * (frame_index - state.last_frame_index if state.last_frame_index >= 0 else 1)
            # under rate control a cut is whole only out of credit: moving footage "cuts" often (low mean
            # similarity frame after frame) and would otherwise spend whole frames whatever the budget;
            # in debt it is judged and spends what the bucket holds (periodic keyframes stay: 1 in W)
            if keyframe and not first and state.frames_since_keyframe + 1 < w and state.credit < 0:
                keyframe = False
        if keyframe:
            positions = torch.arange(n)
            state.held_unit = x_unit.clone()
            state.held_frame = torch.full((n,), frame_index, dtype=torch.long)
            state.grid = grid
            state.frames_since_keyframe = 0
            stats.keyframes += 1
            stats.fidelity_sum += 1.0
        else:
            prev_sim = None
            if self._uses_prev and state.prev_unit is not None:
                prev_sim = (x_unit * state.prev_unit).sum(-1)
            decision = self.policy.decide(
                FrameContext(sim, pixel_change, state.frames_since_keyframe + 1, w, prev_sim)
            )
            k = frame_token_budget(n, decision.keep_ratio)
            if target is not None:  # spend the bucket; the policy ranks
                k = min(n, max(0, math.floor(state.credit + 1e-9)))
                if self.config.min_change > 0:  # the fuller the bucket, the lower the bar (none when full)
                    bar = self.config.min_change
                    if self.config.max_credit_frames is not None:
                        bar *= max(0.0, 1.0 - state.credit / (self.config.max_credit_frames * n))
                    k = min(k, int(((1.0 - sim) >= bar).sum()))
            if decision.priority is None and target is not None and self.config.refresh > 0:
                age = (frame_index - state.held_frame).float() / w
                chosen = ((1.0 - sim) + self.config.refresh * age).topk(k, sorted=False).indices
            elif decision.priority is None:  # least similar first
                chosen = sim.topk(k, largest=False, sorted=False).indices
            else:
                chosen = decision.priority.topk(k, sorted=False).indices
            positions = chosen.sort().values
            state.held_unit[positions] = x_unit[positions]
            state.held_frame[positions] = frame_index
            state.frames_since_keyframe += 1
            # Kept positions are reproduced exactly; the others hold a token at cosine `sim`
            # (fidelity against the stored-precision tokens).
            stats.fidelity_sum += (k + float(sim.sum()) - float(sim[positions].sum())) / n
        if target is not None:
            state.credit -= int(positions.shape[0])
            if self.config.max_credit_frames is not None:
                state.credit = min(state.credit, self.config.max_credit_frames * n)
        if self._uses_prev:
            state.prev_unit = x_unit
        state.last_frame_index = frame_index
        stats.frames += 1
        stats.tokens_in += n
        stats.tokens_kept += int(positions.shape[0])
        return TokenSegment(
            stream_id=state.stream_id,
            frame_index=frame_index,
            timestamp=timestamp,
            positions=positions,
            tokens=x[positions],
            keyframe=keyframe,
            grid=grid,
        )
