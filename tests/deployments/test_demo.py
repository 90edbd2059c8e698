"""`streamdycoke demo` end to end, in its own process (its own broker, Redis, Ray and Serve)."""

import json
import os
import subprocess
import sys

from ..conftest import needs_isolated_network

pytestmark = needs_isolated_network


def test_demo_accounts_for_every_frame_and_its_alerts_are_true_to_the_scripted_scenes():
    """Each camera films a scripted scene (an object in view for a known interval of a looped file) and asks
    a standing question about it, answered offline by the event-QA model. The run covers one pass of the
    scene and part of the next: each camera raises exactly one alert after its object entered and clears it
    after the object left, each within 4 s of scene time (two rounds of 1 s, the answer's lag, latency)."""
    env = {**os.environ, "RAY_ADDRESS": ""}  # its own local Ray, not the test session's
    out = subprocess.run([sys.executable, "-m", "streamdycoke.cli", "demo", "--cameras", "2", "--duration", "20",
                          "--json"], capture_output=True, text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(r["cameras"]) == {"cam0", "cam1"}
    for cam, c in r["cameras"].items():
        assert c["frames_ingested"] > 0
        assert c["frames_ingested"] == c["frames_processed"] + c["frames_skipped"] + c["frames_dead_lettered"], cam
        assert 0 < c["tokens_kept"] < c["tokens_in"]
        assert "efficientnet-lite0" in c["query"]["skipped"], "the LLM is not asked about tokens it cannot read"
        sc = c["scene"]
        enter, leave = sc["in_view_s"]
        seen = []
        for a in c["alerts"]:
            scene_time = (a["window_end_ts"] - sc["start_ts"]) % sc["loop_s"]  # of the newest frame it read
            seen.append((a["state"], round(scene_time, 1)))
            assert a["answer"] == ("yes" if a["state"] == "raised" else "no") and a["latency_s"] < 2.0, a
        states = [s for s, _ in seen]
        assert states[:2] == ["raised", "cleared"] and states.count("raised") <= 2, (cam, seen)
        assert enter <= seen[0][1] <= enter + 4.0 and leave <= seen[1][1] <= leave + 4.0, (cam, sc, seen)
