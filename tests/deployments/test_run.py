"""`streamdycoke run --config FILE`: the same system against existing Kafka, Redis and Ray."""

import contextlib
import json
import os
import subprocess
import sys
import tempfile

import yaml

from streamdycoke.cli import main
from streamdycoke.video import make_camera_video

from ..conftest import needs_ray_cluster


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


@needs_ray_cluster
def test_run_against_existing_services_on_a_cluster_of_three_ray_nodes(tmp_path):
    """Against a Ray cluster of separate ``ray start`` processes, laid out as a deployment's: a head with
    CPU and no camera slot, a CPU worker that declares camera slots and no CPU, and a node standing in
    for the accelerator group (custom resource ``accelerator``), which the LLM replica asks for. The
    camera lands on the camera worker (the placement the run published names it), the LLM could only
    land on the accelerator node, and the query is answered."""
    from actors.config import RedisSettings
    from actors.token_cache import RedisTokenStore
    from tools.embedded import EmbeddedKafka, EmbeddedRedis, _wait_port, free_port

    video = make_camera_video(tmp_path / "c.mp4", seconds=3, seed=8)
    ray_port = free_port()
    # a loopback-only test cluster: Ray's documented opt-out of token auth, on both sides
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled"}
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    nodes = {"head": ["--head", f"--port={ray_port}", "--num-cpus=2", "--include-dashboard=false"],
             "cameras": [f"--address=127.0.0.1:{ray_port}", "--num-cpus=0", '--resources={"camera": 4}'],
             "accelerator": [f"--address=127.0.0.1:{ray_port}", "--num-cpus=1", '--resources={"accelerator": 1}']}
    procs = []
    with EmbeddedKafka() as k, EmbeddedRedis() as r, contextlib.ExitStack() as dirs:
        try:
            # each node a `ray start` of its own, in its own process group, stopped alone (`ray stop` would
            # stop every Ray on the machine, the test session's too), with a temporary directory of its own as
            # on a machine of its own: two nodes starting at once in one directory race for the same socket
            # names, and the loser's raylet aborts (seen in CI: the LLM then waits for a node that is gone)
            for name, args in nodes.items():  # a small object store each: three nodes share /dev/shm
                # under /tmp itself: the sockets' paths must stay short (AF_UNIX)
                temp = dirs.enter_context(tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp",
                                                                      ignore_cleanup_errors=True))
                procs.append(subprocess.Popen([ray_bin, "start", "--block", "--disable-usage-stats",
                                               f"--temp-dir={temp}", "--object-store-memory=200000000", *args],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                              start_new_session=True))
                if name == "head":
                    _wait_port(ray_port, 60.0, procs[0])
            cfg = tmp_path / "system.yaml"
            cfg.write_text(yaml.safe_dump({
                "kafka": {"bootstrap": k.bootstrap},
                "ray_address": f"127.0.0.1:{ray_port}", "http_port": free_port(),
                "app": {"model": {"weights": None}, "redis": {"url": r.url}, "num_cpus": 0.25,
                        "resources": {"accelerator": 1}, "api_token": "run-test-token"},
                "cameras": [{"id": "dock", "source": str(video)}],
            }))
            out = subprocess.run([sys.executable, "-m", "streamdycoke.cli", "run", "--config", str(cfg),
                                  "--duration", "12", "--json"], capture_output=True, text=True, timeout=400, env=env)
            assert out.returncode == 0, out.stderr[-3000:]
            res = json.loads(out.stdout.strip().splitlines()[-1])
            c = res["cameras"]["dock"]
            assert c["frames_ingested"] == 90 == c["frames_processed"] + c["frames_skipped"] + c["frames_dead_lettered"]
            assert c["query"]["answer"] and c["query"]["visual_tokens"] < c["query"]["visual_tokens_uncompressed"]
            placed = RedisTokenStore(RedisSettings(url=r.url)).fleet_status()  # the run's last published placement
            assert placed is not None and len(placed["nodes"]) == 3, placed
            assert all(n["alive"] for n in placed["nodes"].values())
            node = placed["cameras"]["dock"]["node"]
            res_of = placed["nodes"][node]["resources"]
            assert res_of.get("camera") == 4 and not res_of.get("CPU"), placed["nodes"]  # the camera worker
            assert placed["nodes"][node]["cameras"] == ["dock"] and placed["nodes_lost"] == 0
        finally:
            import signal

            for proc in reversed(procs):
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
