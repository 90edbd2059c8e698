"""Differential encoding of a ViT vision tower: a frame recomputes only the patches that changed.

Per stream, a :class:`TowerState` keeps every patch's pixels when it was last computed (its reference),
per layer its key and value, and its output tokens. A new frame's patch embeddings are computed whole
(one strided convolution, about 0.2% of the tower's work). A patch whose pixels moved from its reference
by more than ``threshold`` (mean absolute change, in ``[0, 1]`` intensity), and every patch within
``halo`` patches of one, is recomputed through every layer: its queries attend to the keys and values
of all patches, the unchanged ones' as cached; the others keep their cached output. A reference moves
only when its patch is recomputed, so slow drift adds up until it crosses the threshold (the gate of
Eventful Transformers, Dutson et al., ICCV 2023, applied to whole patches at the tower's input).

A frame is encoded whole on a stream's first frame, every ``refresh_every`` processed frames, when more
than ``full_above`` of its patches changed (a scene cut, a camera move), and always when ``threshold``
is 0: the result then equals full encoding exactly, batch for batch (tested).

What it costs and what it changes is measured by ``streamdycoke bench encoder`` (docs/encoder.md). The
error comes from unchanged patches outside the halo whose attention context changed: their cached output
is a little stale until the next refresh.

Shapes: ``B`` frames, ``P`` patches (``g * g``), ``D`` the tower's width, ``H`` heads of ``hd``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["DifferentialConfig", "DifferentialEncoder", "DifferentialStats", "SiglipDifferential", "TowerState", "tower_macs"]


@dataclass(frozen=True)
class DifferentialConfig:
    """Settings of differential encoding (:mod:`streamdycoke.encoders.differential`).

    Attributes:
        threshold: a patch is recomputed when its pixels' mean absolute change since it was last
            computed exceeds this (intensity in ``[0, 1]``); 0: every patch of every frame (full encoding).
        halo: patches within this many patches (Chebyshev distance) of a changed one are recomputed too:
            their attention context changed most.
        refresh_every: processed frames between whole encodings (0: only on the conditions below).
        full_above: a frame with more than this share of patches to recompute is encoded whole.
    """

    threshold: float = 0.02
    halo: int = 1
    refresh_every: int = 32
    full_above: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.halo < 0:
            raise ValueError(f"halo must be >= 0, got {self.halo}")
        if self.refresh_every < 0:
            raise ValueError(f"refresh_every must be >= 0, got {self.refresh_every}")
        if not 0.0 < self.full_above <= 1.0:
            raise ValueError(f"full_above must be in (0, 1], got {self.full_above}")


@dataclass
class TowerState:
    """One stream's differential-encoding state; owned by the stream (a camera's pipeline, or the encoder
    replica that camera's frames are routed to), bounded (:meth:`nbytes` is constant once filled) and
    never stored: a restarted stream starts empty and its next frame is encoded whole.

    Attributes:
        pixels: ``(3, S, S)`` the frame's pixel values as each patch was last computed (the gate's reference).
        keys, values: per layer ``(H, P, hd)``, every patch's key and value as last computed.
        out: ``(P, D_out)`` every patch's output token (after the projector) as last computed.
        frames_since_full: processed frames since the last whole encoding.
    """

    pixels: torch.Tensor | None = None
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    out: torch.Tensor | None = None
    frames_since_full: int = 0

    @property
    def empty(self) -> bool:
        return self.out is None

    def clear(self) -> None:
        self.pixels, self.keys, self.values, self.out, self.frames_since_full = None, [], [], None, 0

    def nbytes(self) -> int:
        ts = [self.pixels, self.out, *self.keys, *self.values]
        return sum(t.numel() * t.element_size() for t in ts if t is not None)


@dataclass
class DifferentialStats:
    """What one call computed: per frame, the patches recomputed (``P`` for a whole frame) and whether it
    was whole."""

    computed: list[int]
    whole: list[bool]
    patches: int


def tower_macs(patches: int, width: int, mlp: int, layers: int, computed: int, *, patch: int = 14,
               out_macs_per_patch: int = 0) -> int:
    """Multiply-accumulates of one frame through a ViT tower when ``computed`` of its ``patches`` are
    recomputed: the patch embedding of every patch, then per layer the projections and MLP of the
    recomputed patches and their attention over all patches, and the output projector of the recomputed
    ones. ``computed = patches`` is the full encoding.

    >>> full = tower_macs(729, 1152, 4304, 26, 729)
    >>> round(full / tower_macs(729, 1152, 4304, 26, 182), 2)
    3.99
    """
    embed = patches * 3 * patch * patch * width
    dense = computed * (4 * width * width + 2 * width * mlp)
    attention = 2 * computed * patches * width
    return embed + layers * (dense + attention) + computed * out_macs_per_patch


def _attention_fn(attn):
    """The attention function the host module itself calls (its configured implementation)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.siglip.modeling_siglip import eager_attention_forward

    return ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)


class SiglipDifferential:
    """Differential encoding over a SigLIP vision tower (Hugging Face ``SiglipVisionModel``), its layers
    and weights used as they are (nothing is copied or patched).

    Args:
        tower: the ``SiglipVisionModel`` (LLaVA-OneVision's ``model.vision_tower``).
        feature_layer: which hidden state the host reads (``vision_feature_layer``: 0 the embeddings,
            ``i`` after layer ``i``, negative from the end); layers after it are not run.
        project: ``(..., P, D) -> (..., P, D_out)`` applied per patch after the tower (the host's projector).
    """

    def __init__(self, tower, feature_layer: int, project) -> None:
        self.tower = getattr(tower, "vision_model", tower)
        layers = list(self.tower.encoder.layers)
        n = feature_layer if feature_layer >= 0 else len(layers) + 1 + feature_layer
        if not 0 <= n <= len(layers):
            raise ValueError(f"feature layer {feature_layer} is outside the tower's {len(layers)} layers")
        self.layers = layers[:n]
        self.project = project
        self.patch = self.tower.embeddings.patch_size
        self._attend = _attention_fn(self.layers[0].self_attn) if self.layers else None

    # -- the gate -------------------------------------------------------------------------------------
    def _to_compute(self, pv: torch.Tensor, state: TowerState | None, cfg: DifferentialConfig) -> torch.Tensor | None:
        """``(P,)`` long indices of the patches of ``pv`` ``(3, S, S)`` to recompute, or None: the whole frame."""
        if state is None or state.empty or cfg.threshold <= 0 or state.pixels.shape != pv.shape:
            return None
        if cfg.refresh_every and state.frames_since_full + 1 >= cfg.refresh_every:
            return None
        # mean absolute change per patch, in [0, 1] intensity (the host normalises with std 0.5: x2 -> /2 below)
        change = F.avg_pool2d((pv - state.pixels).abs().mean(0, keepdim=True)[None].float(), self.patch)[0, 0] / 2
        changed = (change > cfg.threshold).float()
        if cfg.halo:
            changed = F.max_pool2d(changed[None, None], 2 * cfg.halo + 1, stride=1, padding=cfg.halo)[0, 0]
        idx = changed.flatten().nonzero().flatten()
        if idx.numel() > cfg.full_above * changed.numel():
            return None
        return idx

    def _pixel_mask(self, idx: torch.Tensor, patches: int, size) -> torch.Tensor:
        """``(S, S)`` bool: the pixels of the patches ``idx`` (a border the patches do not cover stays False)."""
        g = int(math.isqrt(patches))
        m = torch.zeros(patches, dtype=torch.bool, device=idx.device)
        m[idx] = True
        pix = m.view(g, g).repeat_interleave(self.patch, 0).repeat_interleave(self.patch, 1)
        return F.pad(pix, (0, size[1] - pix.shape[1], 0, size[0] - pix.shape[0]))

    # -- one layer ------------------------------------------------------------------------------------
    def _qkv(self, layer, x: torch.Tensor):
        a = layer.self_attn
        h = layer.layer_norm1(x)
        shape = (*h.shape[:-1], -1, a.head_dim)
        q = a.q_proj(h).view(shape).transpose(-3, -2)
        k = a.k_proj(h).view(shape).transpose(-3, -2)
        v = a.v_proj(h).view(shape).transpose(-3, -2)
        return q, k, v

    def _finish(self, layer, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """Residual, MLP and residual, as the host layer does; ``o`` ``(..., L, H, hd)`` attention output."""
        o = layer.self_attn.out_proj(o.reshape(*x.shape[:-1], -1).contiguous())
        x = x + o
        return x + layer.mlp(layer.layer_norm2(x))

    def _attn(self, layer, q, k, v) -> torch.Tensor:
        a = layer.self_attn
        out, _ = self._attend(a, q, k, v, None, is_causal=False, scaling=a.scale, dropout=0.0)
        return out  # (B, L, H, hd)

    # -- a batch --------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor, states: list[TowerState | None],
               config: DifferentialConfig) -> tuple[torch.Tensor, DifferentialStats]:
        """``(B, 3, S, S)`` pixel values (one frame of each of B streams; ``states[b]`` that stream's state,
        None: encode whole and keep nothing) -> ``(B, P, D_out)`` tokens per patch (the projector's
        output, before any pooling), and what was computed. Each given state is updated in place."""
        if len(states) != pixel_values.shape[0]:
            raise ValueError(f"{pixel_values.shape[0]} frames but {len(states)} states")
        emb = self.tower.embeddings(pixel_values)  # (B, P, D), every patch
        B, P, _ = emb.shape
        picks = [self._to_compute(pixel_values[b], states[b], config) for b in range(B)]
        whole = [b for b in range(B) if picks[b] is None]
        part = [b for b in range(B) if picks[b] is not None and picks[b].numel()]
        out: list[torch.Tensor | None] = [None] * B

        if whole:  # the host's own computation, on the same shapes: exact
            x = emb[whole]
            kv = [[] for _ in whole]
            for layer in self.layers:
                q, k, v = self._qkv(layer, x)
                for j, b in enumerate(whole):
                    if states[b] is not None:
                        kv[j].append((k[j].clone(), v[j].clone()))
                x = self._finish(layer, x, self._attn(layer, q, k, v))
            y = self.project(x)  # (Bw, P, D_out)
            for j, b in enumerate(whole):
                out[b] = y[j]
                s = states[b]
                if s is not None:
                    s.pixels = pixel_values[b].clone()
                    s.keys, s.values = [k for k, _ in kv[j]], [v for _, v in kv[j]]
                    s.out = y[j].clone()
                    s.frames_since_full = 0

        if part:  # recomputed patches of every partial frame packed into one row set for the dense work
            rows = [picks[b] for b in part]
            sizes = [int(r.numel()) for r in rows]
            x = torch.cat([emb[b, r] for b, r in zip(part, rows)])  # (A, D)
            for li, layer in enumerate(self.layers):
                q, k, v = self._qkv(layer, x)  # (H, A, hd) each
                outs, start = [], 0
                for b, r, n in zip(part, rows, sizes):
                    s = states[b]
                    s.keys[li][:, r] = k[:, start:start + n]
                    s.values[li][:, r] = v[:, start:start + n]
                    outs.append(self._attn(layer, q[None, :, start:start + n], s.keys[li][None], s.values[li][None])[0])
                    start += n
                x = self._finish(layer, x, torch.cat(outs))
            y = self.project(x)  # (A, D_out)
            start = 0
            for b, r, n in zip(part, rows, sizes):
                s = states[b]
                s.out[r] = y[start:start + n]
                pix = self._pixel_mask(r, P, pixel_values.shape[-2:])
                s.pixels[:, pix] = pixel_values[b][:, pix]
                s.frames_since_full += 1
                out[b] = s.out.clone()
                start += n
        for b in range(B):
            if out[b] is None:  # nothing changed: the cached tokens
                s = states[b]
                s.frames_since_full += 1
                out[b] = s.out.clone()
        computed = [P if picks[b] is None else int(picks[b].numel()) for b in range(B)]
        return torch.stack(out), DifferentialStats(computed, [picks[b] is None for b in range(B)], P)


class DifferentialEncoder:
    """One stream's encoder with differential encoding: the :class:`~streamdycoke.encoders.Encoder`
    interface over a base encoder that supports it (``encode_differential``, LLaVA-OneVision's tower), with
    the stream's :class:`TowerState`. A :class:`~streamdycoke.pipeline.FramePipeline` owns one per stream.

    Args:
        base: the encoder (shared between streams is fine: the state lives here).
        config: the differential settings.
    """

    def __init__(self, base, config: DifferentialConfig) -> None:
        if not hasattr(base, "encode_differential"):
            raise ValueError(f"encoder {getattr(base, 'name', base)!r} has no differential encoding "
                             "(llava-onevision's tower has)")
        self.base, self.config = base, config
        self.name, self.grid, self.dim, self.input_size = base.name, base.grid, base.dim, base.input_size
        self.state = TowerState()
        self.computed = 0  # patches recomputed, over every frame
        self.patches = 0  # patches in, over every frame

    def encode(self, frames) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8, consecutive frames of this stream -> ``(B, N, D)`` float32, in order."""
        out = []
        for f in frames:
            out.append(self.base.encode_differential(f[None], [self.state], self.config)[0])
            st = self.base.last_stats
            self.computed += st.computed[0]
            self.patches += st.patches
        return torch.stack(out)

    def reset(self) -> None:
        """Forget the state: the next frame is encoded whole."""
        self.state.clear()
