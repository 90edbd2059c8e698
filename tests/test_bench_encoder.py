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
