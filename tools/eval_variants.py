"""Compare streaming-compressor variants on the event-QA VALIDATION streams (never the test split).

This is how the README's "tried on 96 validation streams" figures were taken (Accuracy, what was tuned
on what). Run from the repository root after `streamdycoke eval` has trained runs/eval/answerer.pt:

    python tools/eval_variants.py 3000 96 stream,stream_2r,stream_ks50 0.1,0.15,0.25,0.5

Arguments: answerer steps (only if it must be trained), validation streams, variants, budgets.
"""
import sys, time
import numpy as np, torch
from streamdycoke.encoders import EncoderSpec, build_encoder
from streamdycoke.evalqa.data import encode_streams, object_references
from streamdycoke.evalqa.scenes import SceneSpec
from streamdycoke.evalqa.answerer import EventQA, train_answerer, predict
from streamdycoke.evalqa.questions import scene_questions
from streamdycoke.evalqa import run as R
from streamdycoke.evalqa.matched import read_share, training_masks
from streamdycoke.evalqa.methods import keep_mask, stream_mask
from streamdycoke.policy import ThresholdPolicy
from streamdycoke.stream import StreamConfig
from streamdycoke.sampler import SamplerConfig
from pathlib import Path
torch.set_num_threads(2)
enc = build_encoder(EncoderSpec("efficientnet-lite0"))
spec = SceneSpec(frames=40)
cache = "runs/eval/streams"
refs = object_references(enc)
nval = int(sys.argv[2]) if len(sys.argv) > 2 else 24
val = encode_streams(enc, "val", list(range(nval)), spec=spec, cache_dir=cache, progress=False)
path = Path("runs/eval/answerer.pt")
if path.exists():
    model = EventQA.load(path)
else:
    train = encode_streams(enc, "train", list(range(400)), spec=spec, cache_dir=cache, progress=False)
    t = time.time()
    masks = training_masks(train, progress=False)
    print("masks", time.time() - t, flush=True)
    rng = np.random.default_rng(999)
    vq = [(s, scene_questions(s.scene, rng, 4, R.SCORED_KINDS)) for s in val[:24]]
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    model, hist = train_answerer(train, refs, steps=steps, seed=0, val=vq, token_dropout=0.5, kinds=R.SCORED_KINDS,
                                 masks=masks, progress=True)
    print("val acc", [h.get("val_accuracy") for h in hist if "val_accuracy" in h], flush=True)
    model.save(path)
rng = np.random.default_rng(5)
items = [(s, scene_questions(s.scene, rng, 12, R.SCORED_KINDS)) for s in val]
answers = [np.array([q.answer for q in qs]) for _, qs in items]
kinds = np.concatenate([[q.kind for q in qs] for _, qs in items])
split = np.cumsum([len(a) for a in answers])[:-1]
def score(keeps):
    pred = predict(model, items, refs, keeps)
    c = [p == a for p, a in zip(np.split(pred, split), answers)]
    allc = np.concatenate(c)
    return c, {k: round(float(allc[kinds == k].mean()), 3) for k in R.SCORED_KINDS}
base, bk = score(None)
print("uncompressed", R.bootstrap(base)[:2], bk, flush=True)
variants = {
    "uniform": lambda s, r: keep_mask("uniform", s, r),
    "ttm": lambda s, r: keep_mask("ttm", s, r),
    "evs": lambda s, r: keep_mask("evs", s, r),
    "stream": lambda s, r: keep_mask("stream", s, r),
    "stream_w32": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(window=32)),
    "stream_w16_ref": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(window=16, refresh=0.1)),
    "stream_w40_ref": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(window=40, refresh=0.1)),
    "stream_w40_ref3": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(window=40, refresh=0.3)),
    "stream_ks_none": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(keyframe_share=None)),
    "stream_ks50": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(keyframe_share=0.5)),
    "stream_ks25": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(keyframe_share=0.25)),
    "stream_ks50_ref": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(keyframe_share=0.5, refresh=0.1)),
    "stream_ks25_ref": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(keyframe_share=0.25, refresh=0.1)),
    "stream_all": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, sampler=SamplerConfig(min_share=1.0)),
    "stream_w8": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(window=8)),
    "stream_all_w8": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(window=8), sampler=SamplerConfig(min_share=1.0)),
    "stream_all_ks": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(keyframe_share=0.5), sampler=SamplerConfig(min_share=1.0)),
    "stream_mc05": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(min_change=0.05, max_credit_frames=2)),
    "stream_mc10": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(min_change=0.1, max_credit_frames=2)),
    "stream_mc20": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(min_change=0.2, max_credit_frames=2)),
    "stream_mc10_c8": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(min_change=0.1, max_credit_frames=8)),
    "stream_bar30_c4": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(min_change=0.3, max_credit_frames=4)),
    "stream_bar50_c8": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(min_change=0.5, max_credit_frames=8)),
    "stream_bar30_c1": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(min_change=0.3, max_credit_frames=1)),
    "stream_bar50_c1": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(min_change=0.5, max_credit_frames=1)),
    "stream_bar50_c2": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, config=StreamConfig(min_change=0.5, max_credit_frames=2)),
    "stream_ct005": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, sampler=SamplerConfig(change_threshold=0.005)),
    "stream_ct008": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, sampler=SamplerConfig(change_threshold=0.008)),
    "stream_2r": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, sampler=SamplerConfig(min_share=min(1.0, 2 * r))),
    "stream_4r": lambda s, r: stream_mask(s, r, ThresholdPolicy(), live=True, sampler=SamplerConfig(min_share=min(1.0, 4 * r))),
}
BUD = [float(x) for x in sys.argv[4].split(',')] if len(sys.argv) > 4 else [0.05, 0.10, 0.15, 0.25, 0.5]
only = sys.argv[3].split(",") if len(sys.argv) > 3 else list(variants)
for name in only:
    fn = variants[name]
    for r in BUD:
        keeps = [fn(s, r) for s in val]
        share = read_share(keeps, items)
        if share > r * 1.01:
            r2 = r * r / share
            keeps = [fn(s, r2) for s in val]
            share = read_share(keeps, items)
        c, bk = score(keeps)
        acc, ci, d, dci = R.bootstrap(c, base)
        print(f"{name:<16} r={r:.2f} read={share:.3f} acc={acc:.3f}±{ci:.3f} d={d:+.3f}±{dci:.3f} {bk}", flush=True)
