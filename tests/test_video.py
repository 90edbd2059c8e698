import random

from streamdycoke.video import DecodeStats, decode_frames, make_camera_video, probe


def test_synthetic_camera_video_is_deterministic_and_decodes_at_requested_size(tmp_path):
    a = make_camera_video(tmp_path / "a.mp4", seconds=1, seed=3)
    b = make_camera_video(tmp_path / "b.mp4", seconds=1, seed=3)
    import numpy as np

    fa = [f.rgb for f in decode_frames(str(a))]
    fb = [f.rgb for f in decode_frames(str(b))]
    assert len(fa) == len(fb) and max(np.abs(x.astype(int) - y).mean() for x, y in zip(fa, fb)) < 1.0
    assert probe(str(a))["frames"] == 30
    frames = list(decode_frames(str(a), size=(56, 72)))
    assert len(frames) == 30 and frames[0].rgb.shape == (56, 72, 3)
    assert [f.index for f in frames] == list(range(30))
    assert all(f2.timestamp > f1.timestamp for f1, f2 in zip(frames, frames[1:]))


def test_corrupt_packets_are_counted_and_decoding_goes_on(tmp_path):
    good = make_camera_video(tmp_path / "good.mp4", seconds=4, seed=1)
    data = bytearray(good.read_bytes())
    rng = random.Random(0)
    for i in range(len(data) // 3, len(data) // 3 + 3000, 7):
        data[i] = rng.randrange(256)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    stats = DecodeStats()
    frames = list(decode_frames(str(bad), stats=stats))
    assert stats.corrupt_packets > 0
    assert stats.frames == len(frames) > 0
    assert frames[-1].timestamp > 3.0, "frames after the damage still come through"
