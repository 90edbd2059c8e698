"""The accuracy evidence: the pretrained encoder, the event-QA benchmark's ground truth, the methods at
matched budgets, rate control, the answerer's view of a stream, and ``streamdycoke eval`` end to end."""

import json
import math

import numpy as np
import pytest
import torch

from streamdycoke.encoders import EncoderSpec, build_encoder, encoder_shape
from streamdycoke.evalqa.answerer import EventQA, StreamInputs, build_batch
from streamdycoke.evalqa.data import EncodedStream
from streamdycoke.evalqa.methods import METHODS, LiveMask, held_index, keep_mask, mask_of
from streamdycoke.evalqa.questions import ANSWERS, KIND_ANSWERS, Question, scene_questions
from streamdycoke.evalqa.scenes import (BACKGROUNDS, OBJECTS, SIZE, generate_scene, object_reference_frame, render,
                                        split_backgrounds, split_objects)
from streamdycoke.policy import ThresholdPolicy, load_policy
from streamdycoke.stream import StreamCompressor, StreamConfig

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def lite0():
    return build_encoder(EncoderSpec("efficientnet-lite0"))


def test_efficientnet_lite0_is_the_pretrained_imagenet_model(lite0):
    from streamdycoke.encoders.efficientnet import imagenet_class_names

    assert encoder_shape(EncoderSpec("efficientnet-lite0")).grid == lite0.grid == (7, 7)
    cat = object_reference_frame("cat", size=224)
    toks = lite0.encode(cat)
    assert toks.shape == (1, 49, 1280)
    # the head over the tokens is the model's own forward pass
    x = (torch.from_numpy(cat).permute(2, 0, 1)[None].float() - 127.0) / 128.0
    with torch.no_grad():
        direct = lite0.model(x)
    assert torch.allclose(lite0.classify(toks), direct, atol=1e-4)
    names = imagenet_class_names()
    top = int(direct.argmax())
    assert 281 <= top <= 285, f"a cat photo classified as {names[top]!r}"  # ImageNet's domestic cats


def test_scenes_are_reproducible_and_splits_disjoint():
    a, b = generate_scene(3, "test"), generate_scene(3, "test")
    assert a == b and np.array_equal(render(a, 7), render(b, 7))
    assert render(a, 0).shape == (SIZE, SIZE, 3)
    for kind, names in (("objects", OBJECTS), ("backgrounds", BACKGROUNDS)):
        per = [set(split_objects(s) if kind == "objects" else split_backgrounds(s)) for s in ("train", "val", "test")]
        assert not (per[0] & per[1] or per[0] & per[2] or per[1] & per[2]), kind
        assert set().union(*per) == set(names)
    for seed in range(20):
        sc = generate_scene(seed, "test")
        assert {a.name for a in sc.appearances} <= set(split_objects("test"))
        assert {bg for bg, _ in sc.backgrounds} <= set(split_backgrounds("test"))


def test_ground_truth_matches_the_pixels():
    """An object the scene says is in view changes the frame where it is drawn; one it says is not, does not."""
    for seed in range(30):
        sc = generate_scene(seed, "train")
        if sc.appearances:
            break
    a = sc.appearances[0]
    empty = type(sc)(sc.seed, sc.split, sc.frames, sc.backgrounds, sc.cut, sc.light, sc.shake, [])
    inside = a.start
    diff = np.abs(render(sc, inside).astype(int) - render(empty, inside).astype(int)).mean()
    assert diff > 3.0
    outside = [f for f in range(sc.frames) if not sc.in_view(f)]
    if outside:
        assert np.array_equal(render(sc, outside[0]), render(empty, outside[0]))


def test_questions_answers_follow_the_scene():
    rng = np.random.default_rng(0)
    for seed in range(40):
        sc = generate_scene(seed, "val")
        for q in scene_questions(sc, rng, per_kind=4):
            assert q.answer in KIND_ANSWERS[q.kind]
            if q.kind == "present":
                assert (q.x in sc.in_view(q.t)) == (ANSWERS[q.answer] == "yes")
            elif q.kind == "appeared":
                seen = any(q.x in sc.in_view(f) for f in range(q.t - q.window + 1, q.t + 1))
                assert seen == (ANSWERS[q.answer] == "yes")
            elif q.kind == "count":
                assert ANSWERS[q.answer] == str(len(sc.distinct_objects()))
            elif q.kind == "scene_change":
                assert (sc.cut is None) == (ANSWERS[q.answer] == "no-change")
            elif q.kind == "first":
                fx, fy = sc.first_seen(q.x), sc.first_seen(q.y)
                assert (fx < fy) == (ANSWERS[q.answer] == "x-first")


def _stream(seed=1, T=40, still=False):
    """A token stream with skipped-looking stillness and a change: (T, 49, 64) and thumbnails."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(49, 64, generator=g)
    toks = base.expand(T, 49, 64).clone()
    thumbs = np.zeros((T, 32, 32), np.float32)
    if not still:
        for t in range(T):
            toks[t, t % 49] += 3 * torch.randn(64, generator=g)  # something moves
            thumbs[t, (t % 32), :] = 0.9
    return EncodedStream(None, toks.half(), thumbs)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("r", [0.05, 0.15, 0.5])
def test_every_method_keeps_about_its_budget(method, r):
    s = _stream()
    keep = mask_of(keep_mask(method, s, r, net=load_policy("net")))
    kept = keep.float().mean().item()
    assert keep.shape == (40, 49) and bool(keep[0].all())  # every method starts from a whole frame
    if method in ("uniform", "evs"):
        assert abs(kept - r) <= 1 / 40 + 1e-6
    else:  # ttm rounds per frame; the streaming ones spend their bucket (keyframes may overdraw it)
        assert kept <= r + 2 / 40 + 1e-6
        assert kept >= 0.5 * r


def test_a_streaming_methods_reader_is_given_the_newest_frame_it_processed():
    """The camera stores its newest processed frame as the live frame: the eval reads a streaming method the
    same way, each question's now frame the newest frame the sampler processed by then."""
    from streamdycoke.evalqa.matched import read_share

    s = _stream(still=True)
    under_budget = keep_mask("stream", s, 0.05)  # under a token budget every frame is processed
    assert isinstance(under_budget, LiveMask) and torch.equal(under_budget.live, torch.arange(40))
    from streamdycoke.evalqa.methods import stream_mask

    plain = stream_mask(s, 0.05, ThresholdPolicy(), live=True)
    assert torch.equal(plain.live, torch.arange(40)) and torch.equal(plain.mask, under_budget.mask)
    # a sampler that skipped frames 31..39 of a still scene: the reader at 39 is given frame 30
    keep = LiveMask(under_budget.mask.clone(), torch.arange(40).clamp(max=30))
    keep.mask[31:] = False
    t = 39
    model = EventQA(dim=64, pca=16, d=32, positions=49)
    model.fit_pca(s.tokens.view(-1, 64).float())
    refs = {"cat": torch.nn.functional.normalize(torch.randn(64), dim=0)}
    q = Question("present", t, 0, "cat", None, 1)
    si = StreamInputs(model, s)
    read = model(build_batch(model, [(si, q, keep.mask.float(), 0, int(keep.live[t]))], refs))
    changed = s.tokens.clone()
    changed[t] = torch.randn_like(changed[t].float()).half()  # the question's own frame, not processed: unseen
    si2 = StreamInputs(model, EncodedStream(None, changed, s.thumbs))
    assert torch.allclose(read, model(build_batch(model, [(si2, q, keep.mask.float(), 0, int(keep.live[t]))], refs)),
                          atol=1e-5)
    # the share counts the live frame whole in place of what was kept of it
    items = [(s, [q])]
    f = int(keep.live[t])
    assert read_share([keep], items) == pytest.approx((float(keep.mask.sum()) + 49 - float(keep.mask[f].sum())) / (40 * 49))


def test_rate_control_counts_skipped_frames_and_spends_a_still_scene_budget():
    toks = torch.randn(49, 32).expand(200, 49, 32).clone() + 0.01 * torch.randn(200, 49, 32)
    comp = StreamCompressor(StreamConfig(window=1000, budget_ratio=0.1))
    st = comp.new_state("s")
    processed = list(range(0, 200, 4))  # the sampler kept one frame in four
    for i in processed:
        comp.process(st, toks[i], (7, 7), i, i / 5)
    budget = 0.1 * 197 * 49  # frames in up to the last processed one
    assert st.stats.tokens_kept <= budget + 1
    assert st.stats.tokens_kept >= budget - 49 - 1  # the bucket is spent: at most one frame's share left
    free = StreamCompressor(StreamConfig(window=1000))  # no rate control: a still scene keeps ~nothing
    st2 = free.new_state("s")
    for i in processed:
        free.process(st2, toks[i], (7, 7), i, i / 5)
    assert st2.stats.tokens_kept < st.stats.tokens_kept


def test_held_index_is_the_last_kept_frame():
    keep = torch.tensor([[1, 1], [0, 1], [1, 0], [0, 0]], dtype=torch.bool)
    assert held_index(keep).tolist() == [[0, 0], [0, 1], [2, 1], [2, 1]]


def test_answerer_sees_only_the_past_and_only_what_is_kept():
    s = _stream(T=12)
    model = EventQA(dim=64, pca=16, d=32, positions=49)
    model.fit_pca(s.tokens.view(-1, 64).float())
    refs = {"cat": torch.nn.functional.normalize(torch.randn(64), dim=0)}
    q = Question("present", 5, 0, "cat", None, 1)
    si = StreamInputs(model, s)
    full = model(build_batch(model, [(si, q, torch.ones(12, 49))], refs))
    later = s.tokens.clone()
    later[6:] = torch.randn_like(later[6:].float()).half()  # frames after t=5 changed: invisible
    si2 = StreamInputs(model, EncodedStream(None, later, s.thumbs))
    assert torch.allclose(full, model(build_batch(model, [(si2, q, torch.ones(12, 49))], refs)), atol=1e-5)
    keep = torch.ones(12, 49)
    keep[3:5] = 0  # dropped slots are not seen either
    masked = model(build_batch(model, [(si, q, keep)], refs))
    earlier = s.tokens.clone()
    earlier[3:5] = torch.randn_like(earlier[3:5].float()).half()
    si3 = StreamInputs(model, EncodedStream(None, earlier, s.thumbs))
    assert torch.allclose(masked, model(build_batch(model, [(si3, q, keep)], refs)), atol=1e-5)
    assert not torch.allclose(full, masked)
    # the question's frame is the now frame: read whole whatever was kept of it, and every token of it seen
    unkept_now = keep.clone()
    unkept_now[5] = 0
    assert torch.allclose(masked, model(build_batch(model, [(si, q, unkept_now)], refs)), atol=1e-5)
    changed_now = s.tokens.clone()
    changed_now[5, 7] = torch.randn(64).half()
    si4 = StreamInputs(model, EncodedStream(None, changed_now, s.thumbs))
    assert not torch.allclose(masked, model(build_batch(model, [(si4, q, unkept_now)], refs)), atol=1e-5)
    out = model(build_batch(model, [(si, q, torch.zeros(12, 49))], refs))  # nothing kept: the now frame alone
    assert torch.isfinite(out[0, list(KIND_ANSWERS["present"])]).all()


def test_object_references_hold_the_mean_and_the_cells_the_object_covers(lite0, tmp_path):
    from streamdycoke.evalqa.answerer import EventQA
    from streamdycoke.evalqa.data import object_references
    from streamdycoke.evalqa.scenes import object_on_grey

    refs = object_references(lite0, names=["coffee", "horse"])
    for r in refs.values():
        assert r.dim() == 2 and r.shape[0] > 1 + 6 and r.shape[1] == 1280
        assert torch.allclose(r.norm(dim=1), torch.ones(r.shape[0]), atol=1e-4)
    # the coffee cup drawn off-centre at a size a stream shows: its cells match coffee's cells best
    frame, alpha = object_on_grey("coffee", 64, (-60, 50))
    unit = torch.nn.functional.normalize(lite0.encode(frame[None])[0].float(), dim=-1)  # (49, D)
    cover = torch.from_numpy(alpha).view(7, 32, 7, 32).mean((1, 3)).flatten()
    on = cover >= 0.5
    best = {n: (unit @ r[1:].T).amax(1) for n, r in refs.items()}
    assert best["coffee"][on].mean() > best["horse"][on].mean()
    assert best["coffee"][on].mean() > best["coffee"][cover == 0].mean()
    # a checkpoint of the reader with one reference vector per object is refused, saying to retrain
    torch.save({"format": "streamdycoke.EventQA/2", "config": {}, "state_dict": {}}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="retrain"):
        EventQA.load(tmp_path / "old.pt")


def test_a_long_stream_is_read_through_its_window_then_its_now_frame():
    s = _stream(T=30)
    model = EventQA(dim=64, pca=16, d=32, positions=49)
    model.fit_pca(s.tokens.view(-1, 64).float())
    refs = {"cat": torch.nn.functional.normalize(torch.randn(64), dim=0)}
    q = Question("present", 25, 0, "cat", None, 1)
    si = StreamInputs(model, s)
    # uncompressed: a windowed read of frames 16..25 is the read of that clip alone, asked at its frame 9
    windowed = model(build_batch(model, [(si, q, torch.ones(30, 49), 16)], refs))
    clip = StreamInputs(model, EncodedStream(None, s.tokens[16:26], s.thumbs[16:26]))
    alone = model(build_batch(model, [(clip, Question("present", 9, 0, "cat", None, 1), torch.ones(10, 49))], refs))
    assert torch.allclose(windowed, alone, atol=1e-5)
    # compressed: frame 0 whole, then only position 0 kept; the window reads position 0 of frames 16..24,
    # then frame 25 whole (the now frame); nothing before the window is seen
    keep = torch.zeros(30, 49)
    keep[0] = 1
    keep[:, 0] = 1
    read = model(build_batch(model, [(si, q, keep, 16)], refs))
    before = s.tokens.clone()
    before[:16] = torch.randn_like(before[:16].float()).half()  # every frame before the window: unseen
    before[20, 7] = torch.randn(64).half()  # not kept, in the window: unseen
    si2 = StreamInputs(model, EncodedStream(None, before, s.thumbs))
    assert torch.allclose(read, model(build_batch(model, [(si2, q, keep, 16)], refs)), atol=1e-5)
    now = s.tokens.clone()
    now[25, 7] = torch.randn(64).half()  # not kept at the question's frame, but the now frame is whole: seen
    si3 = StreamInputs(model, EncodedStream(None, now, s.thumbs))
    assert not torch.allclose(read, model(build_batch(model, [(si3, q, keep, 16)], refs)), atol=1e-5)


@pytest.mark.slow
def test_eval_command_end_to_end(tmp_path, capsys):
    from streamdycoke.cli import main

    rc = main(["eval", "--train", "4", "--val", "2", "--test", "3", "--frames", "16", "--steps", "10",
               "--budgets", "0.1,0.3", "--no-real", "--cache-dir", str(tmp_path), "--answerer", str(tmp_path / "a.pt"),
               "--plot", str(tmp_path / "p.png"), "--json", "-q"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= res["uncompressed_accuracy"] <= 1.0
    rows = res["results"]
    assert {r["method"] for r in rows} == set(METHODS) and len(rows) == 2 * len(METHODS)
    for r in rows:
        assert set(r) >= {"method", "keep_ratio", "stored_ratio", "accuracy", "ci95", "delta", "delta_ci95", "by_kind"}
        # the share a reader is given counts the now frame and is matched to the target (one frame of slack)
        assert r["stored_ratio"] <= r["keep_ratio"] <= r["target"] + 1 / 16 and math.isfinite(r["ci95"])
        assert set(r["by_kind"]) == set(res["kinds"]) == {"present", "appeared"}
        assert r["seed_delta_range"][0] <= r["seed_delta_range"][1]
    assert len(res["seeds"]) == 2 and res["answerer_seeds"] == [0, 1]
    assert (tmp_path / "p.png").stat().st_size > 0 and (tmp_path / "a.pt").exists() and (tmp_path / "a_s1.pt").exists()
    assert EventQA.load(tmp_path / "a.pt").meta["steps"] == 10
    # long streams: 40 frames read through 16-frame windows by the same answerers (not retrained)
    trained = (tmp_path / "a.pt").stat().st_mtime_ns
    rc = main(["eval", "--train", "4", "--val", "2", "--test", "2", "--frames", "40", "--train-frames", "16",
               "--read-window", "16", "--budgets", "0.2", "--no-real", "--cache-dir", str(tmp_path),
               "--answerer", str(tmp_path / "a.pt"), "--plot", str(tmp_path / "long.png"), "--json", "-q"])
    assert rc == 0 and (tmp_path / "a.pt").stat().st_mtime_ns == trained
    long = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert long["read_window"] == 16 and long["frames_per_stream"] == 40 and res["read_window"] is None
    for r in long["results"]:
        assert r["keep_ratio"] <= r["target"] + 1 / 16
        # offline methods are run on each question's window: no one mask per stream to hold frames from
        assert (r["top1_agreement"] is None) == (r["method"] not in ("stream", "stream-net"))


def test_policy_trains_on_the_task_loss_through_the_soft_keep_mask():
    from streamdycoke.evalqa.scenes import SceneSpec
    from streamdycoke.evalqa.task_policy import train_policy_on_task

    g = torch.Generator().manual_seed(0)
    def still_tokens():  # a still scene with sensor noise: similarities near the policy's thresholds
        base = torch.randn(49, 64, generator=g)
        return (base + 0.1 * torch.randn(12, 49, 64, generator=g)).half()

    streams = [EncodedStream(generate_scene(i, "train", SceneSpec(frames=12)), still_tokens(),
                             np.zeros((12, 32, 32), np.float32)) for i in range(3)]
    refs = {n: torch.nn.functional.normalize(torch.randn(64, generator=g), dim=0) for n in OBJECTS}
    answerer = EventQA(dim=64, pca=16, d=32, positions=49)
    answerer.fit_pca(torch.cat([s.tokens.view(-1, 64).float() for s in streams]))
    frozen = {k: v.clone() for k, v in answerer.state_dict().items()}
    net, history = train_policy_on_task(streams, answerer, refs, StreamConfig(window=8), steps=3, batch=2,
                                        progress=False)
    assert len(history) == 3 and all(math.isfinite(h["loss"]) for h in history)
    # the task loss reached the net's heads (both start at zero: the untrained net is the default) ...
    assert net.frame_head[-1].weight.abs().sum() > 0 and net.token_head[-1].weight.abs().sum() > 0
    # ... and not the answerer, which is frozen
    assert all(torch.equal(frozen[k], v) for k, v in answerer.state_dict().items())
    assert net.calibration.shape == (11, 2)


def test_bootstrap_gives_the_accuracy_its_interval_and_the_paired_difference():
    from streamdycoke.evalqa.run import bootstrap

    rng = np.random.default_rng(1)
    base = [rng.random(12) < 0.8 for _ in range(60)]
    worse = [b & (rng.random(12) < 0.9) for b in base]  # loses about a tenth of the right answers
    acc, ci, delta, dci = bootstrap(worse, base)
    assert acc == pytest.approx(np.concatenate(worse).mean())
    assert delta == pytest.approx(np.concatenate(worse).mean() - np.concatenate(base).mean()) and delta < 0
    assert 0 < dci < ci  # pairing removes the streams' shared difficulty
    assert abs(delta) > dci  # a real loss is resolved
    assert bootstrap(base, base)[2:] == (0.0, 0.0)


def test_rate_control_and_a_policy_cap_are_refused_together():
    from actors.config import CameraConfig
    from streamdycoke.config import PipelineConfig
    from streamdycoke.policy import PolicySpec

    with pytest.raises(ValueError, match="max_keep_ratio"):
        PipelineConfig(stream=StreamConfig(budget_ratio=0.1), policy=PolicySpec(max_keep_ratio=0.5))
    with pytest.raises(ValueError, match="max_keep_ratio"):
        CameraConfig(id="a", stream={"budget_ratio": 0.1}, policy={"max_keep_ratio": 0.5})
    assert CameraConfig(id="a", stream={"budget_ratio": 0.1}).stream.budget_ratio == 0.1


def _user_imagery(tmp_path):
    """Two objects of the user's (one cut out by its alpha), an image background and a video background."""
    from PIL import Image

    from streamdycoke.video import make_camera_video

    objs, bgs = tmp_path / "objects", tmp_path / "backgrounds"
    objs.mkdir()
    bgs.mkdir()
    red = np.zeros((60, 40, 4), np.uint8)
    red[..., 0], red[..., 3] = 230, 255
    red[:10, :, 3] = 0  # a transparent top band: pasted by its alpha
    Image.fromarray(red, "RGBA").save(objs / "red-box.png")
    Image.fromarray(np.full((50, 50, 3), (20, 200, 40), np.uint8)).save(objs / "green-square.jpg")
    Image.fromarray(np.full((300, 400, 3), (40, 40, 160), np.uint8)).save(bgs / "blue-wall.png")
    make_camera_video(bgs / "street.mp4", seconds=2, fps=10, seed=1, size=(120, 160))
    (objs / "notes.txt").write_text("not a picture")
    return objs, bgs


def test_user_imagery_replaces_the_test_split_and_its_ground_truth_holds(tmp_path):
    from streamdycoke.evalqa.scenes import Imagery, scene_objects

    objs, bgs = _user_imagery(tmp_path)
    im = Imagery.from_dirs(objs, bgs)
    assert sorted(im.objects) == ["green-square", "red-box"] and sorted(im.backgrounds) == ["blue-wall", "street"]
    scenes = [generate_scene(seed, "test", imagery=im) for seed in range(30)]
    assert all({a.name for a in sc.appearances} <= set(im.objects) for sc in scenes)
    assert {bg for sc in scenes for bg, _ in sc.backgrounds} == {"blue-wall", "street"}
    import dataclasses

    for sc in scenes:
        for a in sc.appearances:  # the object is drawn where the ground truth says, by its alpha
            f = (a.start + a.end - 1) // 2
            without = dataclasses.replace(sc, appearances=[b for b in sc.appearances if b is not a])
            drawn = (np.abs(render(sc, f).astype(int) - render(without, f)).sum(-1) > 30).sum()
            area = a.size * a.size * (2 / 3 * 5 / 6 if a.name == "red-box" else 1.0)  # 40x60, top sixth clear
            assert 0.8 * area < drawn <= 1.05 * area, (sc.seed, a.name, f, drawn, area)
        qs = scene_questions(sc, np.random.default_rng(sc.seed), 6)
        assert {q.x for q in qs if q.x} <= set(scene_objects(sc)) and {q.y for q in qs if q.y} <= set(im.objects)
    # a video background moves under the objects; an image background stands still
    street = next(sc for sc in scenes if sc.backgrounds[0][0] == "street" and sc.shake is None)
    wall = next(sc for sc in scenes if sc.backgrounds[0][0] == "blue-wall" and sc.cut is None)
    empty = lambda sc: [f for f in range(sc.frames) if not sc.in_view(f) and (sc.cut is None or f < sc.cut)]
    fs = empty(street)[:2]
    if len(fs) == 2:
        assert np.abs(render(street, fs[0]).astype(int) - render(street, fs[1])).mean() > 3
    fw = empty(wall)[:2]
    if len(fw) == 2 and wall.light is None and (wall.shake is None):
        assert np.abs(render(wall, fw[0]).astype(int) - render(wall, fw[1])).mean() < 3
    with pytest.raises(ValueError, match="need 2"):
        Imagery.from_dirs(bgs, None)  # images there, but one only
    with pytest.raises(ValueError, match="not a directory"):
        Imagery.from_dirs(tmp_path / "missing", None)
    with pytest.raises(ValueError, match="test split's only"):
        generate_scene(0, "train", imagery=im)


@pytest.mark.slow
def test_eval_on_user_imagery_uses_the_same_answerer(tmp_path, capsys):
    from streamdycoke.cli import main

    objs, bgs = _user_imagery(tmp_path)
    common = ["eval", "--train", "4", "--val", "2", "--test", "3", "--frames", "16", "--steps", "20", "--budgets", "0.3",
              "--methods", "uniform", "stream", "--no-real", "--cache-dir", str(tmp_path / "c"),
              "--answerer", str(tmp_path / "a.pt"), "--plot", "", "--json", "-q"]
    assert main(common) == 0
    bundled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    trained = (tmp_path / "a.pt").stat().st_mtime_ns
    assert main(common + ["--objects", str(objs), "--backgrounds", str(bgs)]) == 0
    user = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "a.pt").stat().st_mtime_ns == trained, "the answerer is not retrained on the user's pictures"
    assert bundled["imagery"] is None
    assert user["imagery"]["objects"] == ["green-square", "red-box"] and len(user["imagery"]["fingerprint"]) == 16
    assert {r["method"] for r in user["results"]} == {"uniform", "stream"}
    assert 0.0 <= user["uncompressed_accuracy"] <= 1.0


def test_the_shipped_answerers_are_the_two_seeds_of_the_published_figures():
    import json
    from pathlib import Path

    from streamdycoke.evalqa.run import _shipped

    published = json.loads(Path("docs/eval.json").read_text())
    models = [EventQA.load(_shipped(i)) for i in range(2)]
    assert [m.meta["seed"] for m in models] == published["answerer_seeds"] == [0, 1]
    assert models[0].meta["val_accuracy"] == published["answerer"]["val_accuracy"]
    assert _shipped(2) is None


def test_eval_refuses_fewer_than_three_training_steps(capsys):
    """Torch's one-cycle schedule divides by its warm-up's length: too few steps are refused by name, and
    ten (a warm-up of two) train (the end-to-end test above)."""
    from streamdycoke.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "--steps", "2"])
    assert exc.value.code == 2 and "at least 3 training steps" in capsys.readouterr().err
