import json

import pytest

from streamdycoke.cli import main
from streamdycoke.video import make_camera_video


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    return make_camera_video(tmp_path_factory.mktemp("v") / "cam.mp4", seconds=6, seed=7)


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_compress_json_contract_and_default_keeps_at_most_40_percent(camera, capsys):
    assert main(["compress", str(camera), "--json", "-q"]) == 0
    r = last_json(capsys)
    for key in ("frames_in", "frames_processed", "tokens_in", "tokens_kept", "keep_ratio", "fidelity", "compress_fps"):
        assert key in r
    assert r["frames_in"] == 180 and 0 < r["frames_processed"] <= r["frames_in"]
    assert r["tokens_in"] == r["frames_in"] * r["tokens_per_frame"]
    assert r["keep_ratio"] == pytest.approx(r["tokens_kept"] / r["tokens_in"])
    assert r["keep_ratio"] <= 0.40
    assert 0.9 < r["fidelity"] <= 1.0


def test_compress_without_sampler_with_fixed_policy_one_is_lossless(camera, capsys):
    assert main(["compress", str(camera), "--json", "-q", "--no-sampler", "--policy", "fixed:1.0", "--max-frames", "30"]) == 0
    r = last_json(capsys)
    assert r["frames_processed"] == r["frames_in"] == 30
    assert r["keep_ratio"] == 1.0 and r["fidelity"] == pytest.approx(1.0, abs=1e-4)


def test_compress_with_the_shipped_policy_net(camera, capsys):
    assert main(["compress", str(camera), "--json", "-q", "--policy", "net", "--target-keep-ratio", "0.2"]) == 0
    r = last_json(capsys)
    assert r["policy"] == "net" and 0 < r["keep_ratio"] <= 0.4


def test_compress_reports_clear_errors(tmp_path, capsys):
    assert main(["compress", str(tmp_path / "missing.mp4"), "-q"]) == 2
    assert "error" in capsys.readouterr().err
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    assert main(["compress", str(bad), "-q"]) == 2
    assert main(["compress", str(bad), "-q", "--policy", "bogus"]) == 2
