"""`streamdycoke demo` end to end, in its own process (its own broker, Redis, Ray and Serve)."""

import json
import os
import subprocess
import sys

from ..conftest import needs_isolated_network

pytestmark = needs_isolated_network


def test_demo_accounts_for_every_frame_and_answers_each_camera():
    env = {**os.environ, "RAY_ADDRESS": ""}  # its own local Ray, not the test session's
    out = subprocess.run([sys.executable, "-m", "streamdycoke.cli", "demo", "--cameras", "2", "--duration", "20",
                          "--json"], capture_output=True, text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(r["cameras"]) == {"cam0", "cam1"}
    for cam, c in r["cameras"].items():
        assert c["frames_ingested"] > 0
        assert c["frames_ingested"] == c["frames_processed"] + c["frames_skipped"] + c["frames_dead_lettered"], cam
        q = c["query"]
        assert q["answer"] and 0 < q["visual_tokens"] < q["visual_tokens_uncompressed"], json.dumps(q)
