"""A small video-QA model over visual tokens at their (frame, position) slots, and its training.

It reads what every reader of this project is given (:mod:`streamdycoke.reading`): the visual tokens
a stream kept, each at its slot (frame, grid position), then the "now" frame: at each position not kept
at the question's time, the token the stream holds there, flagged as restated. Slots a compressor dropped
are otherwise absent (masked out of attention), as in a video LLM given a pruned sequence.

Architecture (shapes for ``B`` questions over ``L = T * N`` token slots):

- token slot ``(f, p)``: ``Linear(PCA(token))`` + position embedding ``p`` + age embedding
  ``t - f`` (how long before the question's time) + ``Linear`` of 4 similarities to the pictures the
  question names: for X and for Y, the cosine to its mean reference and the best cosine to its
  reference cells (:func:`~.data.object_references`; this is what lets it answer about objects it never
  saw: it learns to match, not to recognise); a now-frame slot adds a learned "restated" vector;
- question: 4 latent queries carrying the kind, the look-back window and the time asked, plus one
  query per named object (its reference vector, projected);
- ``layers`` blocks of [queries cross-attend to the token slots, queries self-attend, MLP];
- the first query's output gives logits over :data:`~.questions.ANSWERS`, restricted to the kind's.

A learned "nothing" slot is always present, so a question asked before any token exists is answered
from the question alone. The token width is first reduced to ``pca`` dimensions by a PCA fitted on
training tokens (a fixed buffer), which makes training on CPU take minutes.

Size: over 300 lines by its docstrings; the model and the batch it reads are one contract; its code is under
300.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .methods import live_frame, mask_of
from .data import EncodedStream
from .questions import ANSWERS, KIND_ANSWERS, KINDS, Question

__all__ = ["EventQA", "QABatch", "build_batch", "predict", "read_start", "train_answerer"]

MAX_FRAMES = 64
FORMAT = "streamdycoke.EventQA/3"  # 3: per-object reference cells (4 similarity inputs)


def _answer_mask() -> torch.Tensor:
    m = torch.full((len(KINDS), len(ANSWERS)), float("-inf"))
    for i, k in enumerate(KINDS):
        m[i, list(KIND_ANSWERS[k])] = 0.0
    return m


@dataclass
class QABatch:
    """Model inputs for ``B`` questions over ``L`` token slots: every frame's, then the now frame's, less
    the slots of weight 0 (dropped, or after the question's time), padded to the longest row.

    Attributes:
        tokens: ``(B, L, P)`` PCA-reduced tokens.
        sims: ``(B, L, 2)`` cosine of each token to the X and Y pictures (0 where not named).
        pos: ``(B, L)`` long grid position. age: ``(B, L)`` long ``t - frame`` (clamped).
        keep: ``(B, L)`` float in [0, 1]: 1 for a slot the stream holds, 0 for one it does not (a
            soft value during policy training).
        now: ``(B, L)`` float, 1 for a now-frame slot (a held token restated at the question's time).
        kind, window, t: ``(B,)`` long. refs: ``(B, 2, P)``. has_ref: ``(B, 2)`` float.
        answer: ``(B,)`` long (ground truth).
    """

    tokens: torch.Tensor
    sims: torch.Tensor
    pos: torch.Tensor
    age: torch.Tensor
    keep: torch.Tensor
    now: torch.Tensor
    kind: torch.Tensor
    window: torch.Tensor
    t: torch.Tensor
    refs: torch.Tensor
    has_ref: torch.Tensor
    answer: torch.Tensor


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.nq, self.nk = nn.LayerNorm(d), nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ns = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.nm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        k = self.nk(kv)
        q = q + self.cross(self.nq(q), k, k, key_padding_mask=bias, need_weights=False)[0]
        s = self.ns(q)
        q = q + self.self_attn(s, s, s, need_weights=False)[0]
        return q + self.mlp(self.nm(q))


class EventQA(nn.Module):
    """See the module docstring. ``dim``: encoder token width; ``pca``: reduced width; ``d``: model width."""

    def __init__(self, dim: int = 1280, pca: int = 128, d: int = 64, heads: int = 4, layers: int = 2,
                 positions: int = 49) -> None:
        super().__init__()
        self.config = {"dim": dim, "pca": pca, "d": d, "heads": heads, "layers": layers, "positions": positions}
        self.register_buffer("pca_mean", torch.zeros(dim))
        self.register_buffer("pca_basis", torch.eye(dim, pca))
        self.vis = nn.Linear(pca, d)
        self.sim = nn.Linear(4, d)  # per named object: cos to its mean reference, best cos to its reference cells
        self.pos = nn.Embedding(positions, d)
        self.age = nn.Embedding(MAX_FRAMES, d)
        self.null = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.restated = nn.Parameter(torch.randn(d) * 0.02)
        self.latent = nn.Parameter(torch.randn(4, d) * 0.02)
        self.kind = nn.Embedding(len(KINDS), d)
        self.window = nn.Embedding(MAX_FRAMES + 1, d)
        self.time = nn.Embedding(MAX_FRAMES, d)
        self.ref = nn.Linear(pca, d)
        self.role = nn.Embedding(2, d)
        self.blocks = nn.ModuleList(_Block(d, heads) for _ in range(layers))
        self.out_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, len(ANSWERS))
        self.register_buffer("answer_mask", _answer_mask())

    def reduce(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(..., dim)`` tokens -> ``(..., pca)``."""
        return (tokens.float() - self.pca_mean) @ self.pca_basis

    def fit_pca(self, tokens: torch.Tensor) -> None:
        """Fit the PCA buffers on ``(M, dim)`` training tokens."""
        x = tokens.float()
        mean = x.mean(0)
        _, _, v = torch.pca_lowrank(x - mean, q=self.pca_basis.shape[1], center=False, niter=4)
        scale = ((x - mean) @ v).std(0).clamp_min(1e-6)
        self.pca_mean.copy_(mean)
        self.pca_basis.copy_(v / scale)  # whitened: unit variance per component

    def forward(self, b: QABatch) -> torch.Tensor:
        """Logits ``(B, len(ANSWERS))``, ``-inf`` outside the question kind's answers."""
        B = b.tokens.shape[0]
        kv = self.vis(b.tokens) + self.sim(b.sims) + self.pos(b.pos) + self.age(b.age) + b.now.unsqueeze(-1) * self.restated
        kv = torch.cat([self.null.expand(B, 1, -1), kv], 1)
        # additive attention bias: log of the keep weight (0 kept, -inf dropped; soft in between)
        bias = torch.cat([torch.zeros(B, 1), b.keep.clamp_min(1e-9).log()], 1)
        bias = torch.where(bias < -20.0, torch.full_like(bias, float("-inf")), bias)
        q0 = self.latent.unsqueeze(0) + (self.kind(b.kind) + self.window(b.window) + self.time(b.t)).unsqueeze(1)
        qr = (self.ref(b.refs) + self.role.weight.unsqueeze(0)) * b.has_ref.unsqueeze(-1)
        q = torch.cat([q0, qr], 1)
        for blk in self.blocks:
            q = blk(q, kv, bias)
        return self.head(self.out_norm(q[:, 0])) + self.answer_mask[b.kind]

    def save(self, path, **meta) -> None:
        torch.save({"format": FORMAT, "config": self.config, "state_dict": self.state_dict(),
                    "meta": meta}, path)

    @classmethod
    def load(cls, path) -> "EventQA":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
        if fmt in ("streamdycoke.EventQA/1", "streamdycoke.EventQA/2"):
            raise ValueError(f"{path} is an EventQA checkpoint of an older reader ({fmt}: "
                             f"{'no now frame' if fmt.endswith('/1') else 'one reference vector per object'}): "
                             "retrain it (streamdycoke eval --retrain)")
        if fmt != FORMAT:
            raise ValueError(f"{path} is not a StreamDyCoke EventQA checkpoint")
        m = cls(**ckpt["config"])
        m.load_state_dict(ckpt["state_dict"])
        m.meta = ckpt.get("meta", {})
        return m.eval()


class StreamInputs:
    """Per-stream tensors the batches are cut from: reduced tokens, unit tokens, slot indices."""

    def __init__(self, model: EventQA, stream: EncodedStream | torch.Tensor) -> None:
        """``stream``: an encoded stream, or its ``(T, N, D)`` tokens (e.g. a live window laid on slots)."""
        toks = (stream if isinstance(stream, torch.Tensor) else stream.tokens).float()  # (T, N, D)
        T, N, _ = toks.shape
        self.T, self.N = T, N
        with torch.no_grad():
            self.reduced = model.reduce(toks.view(T * N, -1))  # (L, P)
        self.unit = F.normalize(toks.view(T * N, -1), dim=-1)  # (L, D)
        self.frame = torch.arange(T).repeat_interleave(N)  # (L,)
        self.pos = torch.arange(N).repeat(T)


def build_batch(model: EventQA, items: list[tuple], refs: dict[str, torch.Tensor]) -> QABatch:
    """Batch ``(stream inputs, question, keep (T, N) float[, since[, now]])`` items as the reader is given
    them (:mod:`streamdycoke.reading`): the kept slots of frames ``since..now-1`` (``since`` 0 when absent:
    the whole past; a long stream is read through a window), then the now frame, frame ``now`` whole
    (the live frame: the question's frame ``t`` when absent or None; a streaming method's newest processed
    frame), flagged as now. Times are relative to ``since`` and ages are capped at ``t - since``, so a windowed read looks
    like a short stream read whole. Slots of weight 0 are left out (exact: attention gives them nothing),
    rows padded with weight 0."""
    toks, sims, pos, age, keep, now = [], [], [], [], [], []
    kind, window, t, rr, has, ans = [], [], [], [], [], []
    zero = torch.zeros(model.pca_basis.shape[1])
    for item in items:
        si, q, k = item[:3]
        since = int(item[3]) if len(item) > 3 else 0
        N = si.N
        tq = min(q.t, si.T - 1)
        now_f = tq if len(item) < 5 or item[4] is None else min(int(item[4]), tq)
        past = ((si.frame < now_f) & (si.frame >= since)).float()
        flat_keep = k.reshape(-1) * past
        src = now_f * N + torch.arange(N)  # the now frame: the live frame whole
        slot_keep = torch.cat([flat_keep, torch.ones(N)])
        idx = torch.cat([torch.arange(si.T * N), src])
        flag = torch.cat([torch.zeros(si.T * N), torch.ones(N)])
        live = slot_keep > 0  # a slot of weight 0 adds nothing to attention: left out, the batch is shorter
        idx, slot_keep, flag = idx[live], slot_keep[live], flag[live]
        toks.append(si.reduced[idx])
        cols = []
        for name in (q.x, q.y):
            if name is None:
                cols += [torch.zeros(idx.shape[0])] * 2
                continue
            r = _rows(refs[name])
            sim = si.unit[idx] @ r.T  # (L', 1 + K)
            cols += [sim[:, 0], sim[:, 1:].amax(1) if r.shape[0] > 1 else sim[:, 0]]
        sims.append(torch.stack(cols, 1))
        pos.append(si.pos[idx])
        age.append((q.t - si.frame[idx]).clamp(0, min(MAX_FRAMES - 1, q.t - since)))
        keep.append(slot_keep)
        now.append(flag)
        kind.append(KINDS.index(q.kind))
        window.append(q.window)
        t.append(min(q.t - since, MAX_FRAMES - 1))
        with torch.no_grad():
            rr.append(torch.stack([model.reduce(_rows(refs[n])[0]) if n is not None else zero for n in (q.x, q.y)]))
        has.append(torch.tensor([q.x is not None, q.y is not None], dtype=torch.float32))
        ans.append(q.answer)
    pad = lambda xs: torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)  # noqa: E731 (keep 0 on padding)
    return QABatch(pad(toks), pad(sims), pad(pos), pad(age), pad(keep), pad(now), torch.tensor(kind),
                   torch.tensor(window), torch.tensor(t), torch.stack(rr), torch.stack(has), torch.tensor(ans))


def _rows(ref: torch.Tensor) -> torch.Tensor:
    """An object's references as rows ``(1 + K, D)`` (:func:`~.data.object_references`); a single vector is one row."""
    return ref.unsqueeze(0) if ref.dim() == 1 else ref


def _random_keep(T: int, N: int, gen: torch.Generator, max_drop: float) -> torch.Tensor:
    """Token dropout for training: frame 0 whole, each later slot kept with a random per-stream rate."""
    if max_drop <= 0:
        return torch.ones(T, N)
    rate = 1.0 - max_drop * torch.rand((), generator=gen).item()
    k = (torch.rand(T, N, generator=gen) < rate).float()
    k[0] = 1.0
    return k


def train_answerer(
    streams: list[EncodedStream], refs: dict[str, torch.Tensor], *, steps: int = 1500, batch: int = 32,
    lr: float = 2e-3, seed: int = 0, token_dropout: float = 0.0, progress: bool = True,
    val: list[tuple[EncodedStream, list[Question]]] | None = None, kinds: tuple[str, ...] = KINDS,
    masks: list[list[torch.Tensor]] | None = None, mask_share: float = 0.5, **model_kw,
) -> tuple[EventQA, list[dict]]:
    """Train :class:`EventQA` on training streams, with fresh random questions of ``kinds`` every step
    (:func:`~.questions.scene_questions`). Each question reads its stream through a keep mask: with
    probability ``mask_share`` one of ``masks[i]`` (compressed versions of training stream ``i``: the
    reader learns to read pruned streams), else a random slot dropout of up to ``token_dropout`` (none
    at 0). Returns the model and the history (loss; val accuracy when given). ``steps``: at least 3."""
    from .questions import scene_questions

    if steps < 3:
        raise ValueError(f"train_answerer needs at least 3 steps, got {steps}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = EventQA(dim=streams[0].tokens.shape[-1], positions=streams[0].tokens.shape[1], **model_kw)
        sample = torch.cat([s.tokens[:: max(1, s.tokens.shape[0] // 8)].reshape(-1, s.tokens.shape[-1]) for s in streams])
        model.fit_pca(sample[torch.randperm(sample.shape[0], generator=gen)[:20000]])
        inputs = [StreamInputs(model, s) for s in streams]
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        # a tenth of the steps warms up, at least two (torch's one-cycle divides by the warm-up's length,
        # which rounds to zero below 20 steps)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=max(0.1, 2 / steps))
        history: list[dict] = []
        bar = tqdm(range(steps), desc="train answerer", unit="step", disable=not progress, file=sys.stderr)
        for step in bar:
            model.train()
            items = []
            while len(items) < batch:
                i = int(rng.integers(len(streams)))
                qs = scene_questions(streams[i].scene, rng, per_kind=1, kinds=kinds)
                if not qs:
                    continue
                q = qs[int(rng.integers(len(qs)))]
                if masks is not None and masks[i] and rng.random() < mask_share:
                    k = masks[i][int(rng.integers(len(masks[i])))].float()
                else:
                    k = _random_keep(inputs[i].T, inputs[i].N, gen, token_dropout)
                items.append((inputs[i], q, k))
            b = build_batch(model, items, refs)
            loss = F.cross_entropy(model(b), b.answer)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            rec = {"step": step, "loss": float(loss.detach())}
            if val is not None and (step + 1) % max(1, steps // 5) == 0:
                rec["val_accuracy"] = float(np.mean(predict(model, val, refs) == np.concatenate([[q.answer for q in qs] for _, qs in val])))
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", **({"val": f"{rec['val_accuracy']:.3f}"} if "val_accuracy" in rec else {}))
        model.eval()
        return model, history


def read_start(t: int, read_window: int | None) -> int:
    """The first frame a question asked at frame ``t`` reads: ``t - read_window + 1`` (0 at most), or 0
    (the whole past) without a window."""
    return 0 if read_window is None else max(0, t - read_window + 1)


@torch.no_grad()
def predict(model: EventQA, items: list[tuple[EncodedStream, list[Question]]], refs: dict[str, torch.Tensor],
            keeps: list | None = None, batch: int = 64, read_window: int | None = None) -> np.ndarray:
    """Predicted answer index for every question, in order. ``keeps[i]`` is what stream ``i`` holds: a
    ``(T, N)`` mask for all its questions, or a list of them, one per question (an offline method run
    on each question's window); default: everything. ``read_window``: each question reads the frames
    of the last ``read_window`` (plus the now frame), as a long stream is read; None: the whole past."""
    model.eval()
    flat: list[tuple] = []
    out = []
    for i, (s, qs) in enumerate(items):
        si = StreamInputs(model, s)
        k = keeps[i] if keeps is not None else torch.ones(si.T, si.N)
        per_q = k if isinstance(k, (list, tuple)) else [k] * len(qs)
        flat.extend((si, q, mask_of(kq).float(), read_start(q.t, read_window), live_frame(kq, min(q.t, si.T - 1)))
                    for q, kq in zip(qs, per_q))
        while len(flat) >= batch or (flat and i == len(items) - 1):  # a stream's inputs are freed once read
            out.append(model(build_batch(model, flat[:batch], refs)).argmax(-1))
            del flat[:batch]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)
