"""Benchmarks print figures; these only check that they run and keep their JSON contract."""

import json

import pytest

from streamdycoke.cli import main


@pytest.mark.slow
def test_bench_prefill_runs_each_case_and_reports_the_contract_keys(capsys):
    assert main(["bench", "prefill", "--tiny", "--frames", "8", "--decode-tokens", "2", "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"prefill_speedup", "keep_ratio", "cases"} <= set(r)
    assert set(r["cases"]) == {"uncompressed", "dycoke_ttm", "streaming"}
    u, s = r["cases"]["uncompressed"], r["cases"]["streaming"]
    assert u["visual_tokens"] == 8 * 196 and s["visual_tokens"] < u["visual_tokens"]
    assert r["keep_ratio"] == s["visual_tokens"] / u["visual_tokens"]


@pytest.mark.slow
def test_bench_compress_reports_the_contract_keys(capsys):
    with pytest.warns(UserWarning, match="TINY RANDOM"):  # the offline LLaVA encoder says so, loudly
        assert main(["bench", "compress", "--frames", "32", "--repeats", "1", "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["compress_fps_per_core"] > 0 and r["reference_fps_per_core"] > 0
    assert set(r["per_frame_path"]) == {"pixels", "llava-onevision"}


def test_bench_decode_reports_frames_per_second_and_cameras(capsys, tmp_path):
    from streamdycoke.video import make_camera_video

    video = make_camera_video(tmp_path / "cam.mp4", seconds=1, seed=1)
    assert main(["bench", "decode", "--video", str(video), "--size", "64", "--repeats", "1", "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["frames"] == 30 and r["size"] == 64
    assert r["decode_fps"] > 0 and r["cameras_at_30fps"] == pytest.approx(r["decode_fps"] / 30)
