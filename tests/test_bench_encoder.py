"""`streamdycoke bench encoder` on the tiny tower: every figure the command reports, for each threshold."""

import json
import subprocess
import sys

import pytest

from streamdycoke.video import make_camera_video

pytestmark = pytest.mark.slow


def test_bench_encoder_reports_speed_operations_and_error_per_threshold(tmp_path):
    clip = make_camera_video(tmp_path / "street.mp4", seconds=3, seed=0)
    out = subprocess.run([sys.executable, "-m", "streamdycoke.cli", "bench", "encoder", "--tiny", "--clips", str(clip),
                          "--frames", "4", "--thresholds", "0,0.02,0.5", "--dtype", "float32", "--json", "-q"],
                         capture_output=True, text=True, timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    rows = {r["threshold"]: r for r in res["results"]}
    assert set(rows) == {0.0, 0.02, 0.5} and res["clips"][0]["frames"] == 4
    exact = rows[0.0]  # threshold 0: every patch of every frame, the full encoding's tokens
    assert exact["recomputed_share"] == 1.0 and exact["ops_ratio"] == 1.0
    assert exact["token_cosine"] > 0.99999 and exact["change_error"] < 1e-4 and exact["kept_agreement"] == 1.0
    # a high threshold recomputes less (the first frame is whole either way) and costs fewer operations
    assert rows[0.5]["recomputed_share"] < rows[0.02]["recomputed_share"] <= 1.0
    assert rows[0.5]["ops_ratio"] > 1.0
    for r in rows.values():
        assert r["speedup"] > 0 and 0 <= r["kept_agreement"] <= 1


def test_bench_gpu_runs_every_measurement_on_tiny_shapes_and_refuses_without_a_gpu(tmp_path):
    out = subprocess.run([sys.executable, "-m", "streamdycoke.cli", "bench", "gpu", "--tiny", "--batches", "1,2",
                          "--repeats", "1", "--answer-tokens", "2", "--plot", str(tmp_path / "gpu.png"), "--json", "-q"],
                         capture_output=True, text=True, timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["batch"] for r in res["encoder"]] == [1, 2]
    assert all(r["full_frames_per_s"] > 0 and r["differential_frames_per_s"] > 0 for r in res["encoder"])
    assert all(0 < r["recomputed_share"] < 1 for r in res["encoder"])
    for lm in res["llm"]:  # the compressed window is the kept share plus the live frame, and reads fewer tokens
        assert lm["compressed"]["visual_tokens"] == round(0.15 * 31 * 196) + 196 < lm["uncompressed"]["visual_tokens"]
        assert lm["compressed"]["prefill_ms"] > 0 and lm["uncompressed"]["decode_ms_per_token"] > 0
    assert [c["fps"] for c in res["cameras_per_gpu"]] == [1, 5, 15]
    assert (tmp_path / "gpu.png").stat().st_size > 0
    import torch

    if not torch.cuda.is_available():
        r = subprocess.run([sys.executable, "-m", "streamdycoke.cli", "bench", "gpu"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and "CUDA" in r.stderr
