"""`streamdycoke run --config FILE`: the same system against existing Kafka, Redis and Ray."""

import json
import os
import subprocess
import sys

import yaml

from streamdycoke.cli import main
from streamdycoke.video import make_camera_video

from ..conftest import needs_isolated_network


def test_bad_config_is_rejected_naming_the_field(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": [{"id": "c1", "sampler": {"min_fps": 20, "max_fps": 5}}]}))
    assert main(["run", "--config", str(cfg)]) == 2
    assert "min_fps" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump({"cameras": [{"id": "c1"}], "modle": {"weights": "x"}}))  # misspelt: named
    assert main(["run", "--config", str(cfg)]) == 2
    assert "modle" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump({"cameras": []}))
    assert main(["run", "--config", str(cfg)]) == 2


@needs_isolated_network
def test_run_against_existing_services(tmp_path):
    from tools.embedded import EmbeddedKafka, EmbeddedRedis, free_port

    video = make_camera_video(tmp_path / "c.mp4", seconds=3, seed=8)
    ray_port = free_port()
    # a loopback-only test cluster: Ray's documented opt-out of token auth, on both sides
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled"}
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    with EmbeddedKafka() as k, EmbeddedRedis() as r:
        # a cluster of its own, in its own process group, stopped alone (`ray stop` would stop every
        # Ray on the machine, the test session's too)
        head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={ray_port}", "--num-cpus=2", "--resources={\"camera\": 4}",
                                 "--include-dashboard=false", "--disable-usage-stats"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        from tools.embedded import _wait_port

        _wait_port(ray_port, 60.0, head)
        try:
            cfg = tmp_path / "system.yaml"
            cfg.write_text(yaml.safe_dump({
                "kafka": {"bootstrap": k.bootstrap},
                "ray_address": f"127.0.0.1:{ray_port}", "http_port": free_port(),
                "app": {"model": {"weights": None}, "redis": {"url": r.url}, "num_cpus": 0.25,
                        "api_token": "run-test-token"},
                "cameras": [{"id": "dock", "source": str(video)}],
            }))
            out = subprocess.run([sys.executable, "-m", "streamdycoke.cli", "run", "--config", str(cfg),
                                  "--duration", "12", "--json"], capture_output=True, text=True, timeout=400, env=env)
            assert out.returncode == 0, out.stderr[-3000:]
            res = json.loads(out.stdout.strip().splitlines()[-1])
            c = res["cameras"]["dock"]
            assert c["frames_ingested"] == 90 == c["frames_processed"] + c["frames_skipped"] + c["frames_dead_lettered"]
            assert c["query"]["answer"] and c["query"]["visual_tokens"] < c["query"]["visual_tokens_uncompressed"]
        finally:
            import signal

            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
