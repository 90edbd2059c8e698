"""The host-independent part of the patch: config, token selection, placeholder shrinking, and the
``generate`` wrapper every host family shares.

How a patched ``generate`` works (the inputs are what the user's processor already built, with the
full number of video placeholders):

1. the host encodes the videos once (``pixel_values_videos`` -> per-video ``(T, N, D)`` features);
2. the host computes every token's position *from the unpruned sequence*;
3. :func:`select_tokens` chooses the kept video tokens of each video (DyCoke TTM or the streaming
   compressor with its policy), through the token-count owner in :mod:`streamdycoke.budget`;
4. the pruned video placeholders are removed from ``input_ids`` / ``attention_mask`` /
   ``mm_token_type_ids``, the kept positions are gathered (so every kept token keeps its original
   position and the text after the video continues from where it did), and the rows are left-padded
   to a common length;
5. the original ``generate`` runs on that, with the kept features passed as ``mm_encoder_outputs``
   and explicit ``position_ids`` (``generate`` advances them by one per new token);
6. the returned sequences carry the user's *original* prompt, so ``out[:, input_ids.shape[1]:]``
   is the answer exactly as without the patch.

Size: over 300 lines by its docstrings (the shapes of every step of the patch); its code is under 300.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from ..policy import PolicySpec, build_policy
from ..stream import StreamCompressor, StreamConfig
from ..ttm import dycoke_ttm

__all__ = ["PatchConfig", "SupportsVideoTokenPruning", "VideoTokens", "apply_patch", "host_for", "register_host", "select_tokens"]

METHODS = ("stream", "ttm", "none")


@dataclass(frozen=True)
class PatchConfig:
    """How a patched model compresses video tokens.

    Attributes:
        method: ``"stream"`` (default: the streaming compressor with ``policy``), ``"ttm"``
            (paper-faithful DyCoke TTM) or ``"none"`` (compression off: outputs equal the
            unpatched model's).
        merge_ratio: TTM's K.
        ttm_window: TTM's window.
        stream: the streaming compressor's settings.
        policy: the streaming compressor's policy.
        positions_1d: hosts with 1-D positions (LLaVA-OneVision, VideoLLaMA3): ``"original"``
            keeps each kept token's original position (gaps where tokens were pruned; the text
            after the video keeps its distance to the video) or ``"contiguous"`` renumbers kept
            tokens as DyCoke does.
        kv_pruning: also use DyCoke's dynamic KV pruning while decoding
            (:class:`streamdycoke.patch.kv.DyCokeKVCache`).
        kv_layer: layer L whose last-token attention selects the visual tokens layers >= L use.
        kv_prune_ratio: P, the fraction of visual tokens pruned for layers >= L.
        kv_recompute: when layers >= L are pruned and from which attention (see
            :mod:`streamdycoke.patch.kv`): ``"dycoke"``, the authors' rule (compare with the previous
            step's attention; prune at a step only when it changed), or ``"drift"`` (compare with the
            attention the selection came from; always prune; select again when it drifted).
        kv_recompute_similarity: the cosine threshold of either rule (the paper's 0.9).
    """

    method: str = "stream"
    merge_ratio: float = 0.7
    ttm_window: int = 4
    stream: StreamConfig = field(default_factory=StreamConfig)
    policy: PolicySpec = field(default_factory=PolicySpec)
    positions_1d: str = "original"
    kv_pruning: bool = False
    kv_layer: int = 3
    kv_prune_ratio: float = 0.7
    kv_recompute: str = "dycoke"
    kv_recompute_similarity: float = 0.9

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.positions_1d not in ("original", "contiguous"):
            raise ValueError(f"positions_1d must be 'original' or 'contiguous', got {self.positions_1d!r}")
        if not 0.0 <= self.kv_prune_ratio < 1.0:
            raise ValueError(f"kv_prune_ratio must be in [0, 1), got {self.kv_prune_ratio}")
        if self.kv_recompute not in ("dycoke", "drift"):
            raise ValueError(f"kv_recompute must be 'dycoke' or 'drift', got {self.kv_recompute!r}")


@dataclass(frozen=True)
class VideoTokens:
    """One video's tokens as the host lays them out in the sequence.

    Attributes:
        frames: ``(T, N, D)`` the per-frame tokens (T temporal steps of an ``grid`` grid).
        grid: ``(H, W)`` of a frame, ``N = H * W``.
        extra: ``(E, D)`` tokens placed after the frames that are always kept (LLaVA's newline).
        present: ``(T, N)`` bool, the tokens that have a placeholder when the host already pruned
            some itself (VideoLLaMA3's ``video_compression_mask``); None when all have one.
    """

    frames: torch.Tensor
    grid: tuple[int, int]
    extra: torch.Tensor | None = None
    present: torch.Tensor | None = None

    @property
    def num_placeholders(self) -> int:
        n = self.frames.shape[0] * self.frames.shape[1] if self.present is None else int(self.present.sum())
        return n + (0 if self.extra is None else self.extra.shape[0])


def select_tokens(frames: torch.Tensor, grid: tuple[int, int], config: PatchConfig) -> torch.Tensor:
    """Which tokens of a ``(T, N, D)`` clip to keep: ``(T, N)`` bool, by ``config.method``."""
    T, N, _ = frames.shape
    if config.method == "none":
        return torch.ones(T, N, dtype=torch.bool)
    x = frames.detach().float().cpu()
    keep = torch.zeros(T, N, dtype=torch.bool)
    if config.method == "ttm":
        idx = dycoke_ttm(x, config.merge_ratio, config.ttm_window).index
        keep[idx[:, 0], idx[:, 1]] = True
        return keep
    comp = StreamCompressor(config.stream, build_policy(config.policy))
    state = comp.new_state("clip")
    for t in range(T):
        keep[t, comp.process(state, x[t], grid, t, float(t)).positions] = True
    return keep


@runtime_checkable
class SupportsVideoTokenPruning(Protocol):
    """What a host family provides so that :func:`apply_patch` can compress its video tokens."""

    def video_token_id(self, model: Any) -> int:
        """The id of the video placeholder token in ``input_ids``."""

    def video_extra_tokens(self, model: Any) -> int:
        """How many always-kept tokens follow each video's frames (LLaVA-OneVision's newline: 1)."""

    def video_tokens(self, model: Any, kwargs: dict) -> list[VideoTokens]:
        """Encode the call's videos (in batch order) into :class:`VideoTokens`."""

    def full_positions(self, model: Any, kwargs: dict) -> torch.Tensor:
        """Positions of every token of the *unpruned* sequence: ``(R, B, L)`` (R rows, 1 or 3)."""

    def kept_inputs(
        self, model: Any, kwargs: dict, keep: torch.Tensor, positions: torch.Tensor, kept: list[torch.Tensor]
    ) -> dict:
        """The ``generate`` kwargs for the pruned sequence; see :func:`shrink`."""

    def virtual_video(self, model: Any, frames: int, grid: tuple[int, int]) -> tuple[dict, torch.Tensor | None]:
        """For a video of ``frames`` x ``grid`` tokens: the extra kwargs :meth:`full_positions` needs
        for an unpruned sequence holding it, and the always-kept tokens after its frames (or None)."""


_HOSTS: dict[str, SupportsVideoTokenPruning] = {}


def register_host(class_name: str, host: SupportsVideoTokenPruning) -> None:
    """Make :func:`apply_patch` support models whose class (or a base class) is ``class_name``."""
    _HOSTS[class_name] = host


def host_for(model: Any) -> SupportsVideoTokenPruning:
    """The registered host of ``model``'s class or nearest base class (the built-in hosts register
    when :mod:`streamdycoke.patch` is imported); ``TypeError`` naming the supported classes otherwise."""
    for cls in type(model).__mro__:
        if cls.__name__ in _HOSTS:
            return _HOSTS[cls.__name__]
    raise TypeError(
        f"{type(model).__name__} is not supported by streamdycoke.apply_patch. Supported: "
        f"{', '.join(sorted(_HOSTS))}. To add a model, implement "
        "streamdycoke.patch.SupportsVideoTokenPruning (video_tokens, full_positions, kept_inputs) "
        "and call streamdycoke.patch.register_host('YourModelClass', host)."
    )


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """1-D positions of a left-padded batch: ``(B, L)``, padding at 1 (as ``generate`` does)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def shrink(
    keep: torch.Tensor, tensors: dict[str, torch.Tensor], positions: torch.Tensor, pad_values: dict[str, int]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Drop the positions where ``keep`` ``(B, L)`` is False and left-pad rows to one length.

    Args:
        keep: ``(B, L)`` bool.
        tensors: ``(B, L)`` tensors to shrink (``input_ids``, ``attention_mask``, ...).
        positions: ``(R, B, L)`` positions to shrink alongside.
        pad_values: fill value per tensor name for the left padding.

    Returns:
        The shrunk ``(B, L')`` tensors and ``(R, B, L')`` positions (padding positions are 0).
    """
    B = keep.shape[0]
    lengths = keep.sum(1)
    Lp = int(lengths.max())
    out = {k: torch.full((B, Lp), pad_values.get(k, 0), dtype=v.dtype, device=v.device) for k, v in tensors.items()}
    pos = torch.zeros(positions.shape[0], B, Lp, dtype=positions.dtype, device=positions.device)
    for b in range(B):
        n = int(lengths[b])
        for k, v in tensors.items():
            out[k][b, Lp - n:] = v[b, keep[b]]
        pos[:, b, Lp - n:] = positions[:, b, keep[b]]
    return out, pos


def pad_token_id(model: Any) -> int:
    """The id used to left-pad shrunk rows (the generation config's pad id, else 0)."""
    pad = model.generation_config.pad_token_id
    if isinstance(pad, (list, tuple)):
        pad = pad[0]
    return 0 if pad is None else int(pad)


def kept_inputs_1d(
    model: Any, kwargs: dict, keep: torch.Tensor, positions: torch.Tensor, drop: tuple[str, ...], features: Any
) -> dict:
    """``generate`` kwargs for hosts with 1-D positions: shrink ids and mask, place positions by
    ``PatchConfig.positions_1d``, drop the host's raw video ``drop`` keys and pass ``features`` (the
    host's ``pooler_output`` for the kept tokens) as ``mm_encoder_outputs``."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    cfg: PatchConfig = model._streamdycoke_config
    tensors, pos = shrink(
        keep, {"input_ids": kwargs["input_ids"], "attention_mask": kwargs["attention_mask"]},
        positions, {"input_ids": pad_token_id(model), "attention_mask": 0},
    )
    mask = tensors["attention_mask"]
    if cfg.positions_1d == "contiguous":
        position_ids = positions_from_mask(mask)
    else:
        position_ids = pos[0].masked_fill(mask == 0, 1)
    new = {k: v for k, v in kwargs.items() if k not in drop}
    new.update(tensors)
    new["position_ids"] = position_ids
    new["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=features)}
    return new


def _restore_prompt(result: Any, original_ids: torch.Tensor, pruned_len: int) -> Any:
    """Put the user's original prompt back in front of the generated tokens."""
    seqs = result if isinstance(result, torch.Tensor) else result.sequences
    restored = torch.cat([original_ids.to(seqs.device), seqs[:, pruned_len:]], dim=1)
    if isinstance(result, torch.Tensor):
        return restored
    result.sequences = restored
    return result


def _make_patched_class(base: type, host: SupportsVideoTokenPruning) -> type:
    class StreamDyCokeModel(base):  # type: ignore[misc, valid-type]
        """Modifications (this instance only):

        - ``generate`` compresses video tokens before prefill (see :mod:`streamdycoke.patch.core`),
          and with ``kv_pruning`` decodes with :class:`~streamdycoke.patch.kv.DyCokeKVCache`.
        Everything else is the host class's.
        """

        def generate(self, *args: Any, **kwargs: Any) -> Any:
            cfg: PatchConfig = self._streamdycoke_config
            if args:
                kwargs["input_ids"] = args[0]
                args = args[1:]
            if cfg.method == "none" or kwargs.get("pixel_values_videos") is None:
                return self._streamdycoke_generate(base, args, kwargs, host.video_extra_tokens(self))
            input_ids = kwargs["input_ids"]
            if kwargs.get("attention_mask") is None:
                kwargs["attention_mask"] = torch.ones_like(input_ids)
            with torch.no_grad():
                videos = host.video_tokens(self, kwargs)
                positions = host.full_positions(self, kwargs)
            keep = torch.ones_like(input_ids, dtype=torch.bool)
            kept_feats: list[torch.Tensor] = []
            vid = iter(videos)
            video_token = host.video_token_id(self)
            for b in range(input_ids.shape[0]):
                slots = (input_ids[b] == video_token).nonzero().squeeze(1)
                masks, used = [], 0
                while used < len(slots):
                    v = next(vid, None)
                    if v is None:
                        raise ValueError(f"row {b} has more video placeholders than the videos provide")
                    sel = select_tokens(v.frames, v.grid, cfg).to(v.frames.device)
                    if v.present is not None:  # the host pruned some tokens already
                        present = v.present.to(sel.device)
                        m, feats = sel[present], v.frames[sel & present]
                    else:
                        m, feats = sel.reshape(-1), v.frames[sel]
                    m = m.to(input_ids.device)
                    if v.extra is not None:
                        m = torch.cat([m, torch.ones(v.extra.shape[0], dtype=torch.bool, device=m.device)])
                        feats = torch.cat([feats, v.extra])
                    masks.append(m)
                    kept_feats.append(feats)
                    used += v.num_placeholders
                if used != len(slots):
                    raise ValueError(
                        f"row {b}: {len(slots)} video placeholders, but its videos have {used} tokens"
                    )
                if masks:
                    keep[b, slots] = torch.cat(masks)
            if next(vid, None) is not None:
                raise ValueError("more videos than video placeholders in input_ids")
            new_kwargs = host.kept_inputs(self, kwargs, keep, positions, kept_feats)
            result = self._streamdycoke_generate(base, args, new_kwargs, host.video_extra_tokens(self))
            return _restore_prompt(result, input_ids, new_kwargs["input_ids"].shape[1])

        def _streamdycoke_generate(self, klass: type, args: tuple, kwargs: dict, video_extras: int = 0) -> Any:
            """The host's ``generate``, with DyCoke's KV pruning when configured (``video_extras``: the
            always-kept tokens after a row's video, e.g. LLaVA's newline)."""
            cfg: PatchConfig = self._streamdycoke_config
            if cfg.kv_pruning and kwargs.get("input_ids") is not None and kwargs.get("cache") is None:
                from .kv import DyCokeKVCache, kv_pruning

                cache = DyCokeKVCache(
                    self, visual_mask=kwargs["input_ids"] == host.video_token_id(self), layer=cfg.kv_layer,
                    prune_ratio=cfg.kv_prune_ratio, recompute_similarity=cfg.kv_recompute_similarity,
                    rule=cfg.kv_recompute, extra_tokens=video_extras,
                )
                self._streamdycoke_last_kv_cache = cache
                with kv_pruning(self, cache):
                    return klass.generate(self, *args, cache=cache, **kwargs)
            return klass.generate(self, *args, **kwargs)

    StreamDyCokeModel.__name__ = f"StreamDyCoke{base.__name__}"
    StreamDyCokeModel.__qualname__ = StreamDyCokeModel.__name__
    return StreamDyCokeModel


def apply_patch(model: Any, config: PatchConfig | None = None) -> Any:
    """Patch ``model`` (this instance only, in place) to compress video tokens in ``generate``.

    Supports ``LlavaOnevisionForConditionalGeneration`` (LLaVA-OneVision and LLaVA-Video
    checkpoints), ``Qwen2VLForConditionalGeneration`` and ``Qwen2_5_VLForConditionalGeneration``.
    ``config=None`` uses :class:`PatchConfig`'s defaults (the streaming compressor);
    ``PatchConfig(method="none")`` turns compression off. Patching again only updates the config.

    Returns the model.
    """
    config = config or PatchConfig()
    if getattr(model, "_streamdycoke_config", None) is not None:
        model._streamdycoke_config = config
        return model
    host = host_for(model)
    model.__class__ = _make_patched_class(model.__class__, host)
    model._streamdycoke_config = config
    return model
