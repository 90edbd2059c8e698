"""Secrets stay secret: with a password-protected Redis, an API token and a Kafka SASL password in the
settings, a running pipeline (camera fleet, Serve app, camera actors) puts none of them in its logs, its
metrics, /v1/fleet, /v1/cameras or its error messages."""

import glob
import os
import urllib.request

from actors.config import IngestSettings
from actors.ingest import Ingestor
from streamdycoke.video import make_camera_video

from ..conftest import needs_isolated_network, wait_for
from .conftest import TINY
from .test_app import http

pytestmark = needs_isolated_network

REDIS_PASSWORD = "redis-pw-7f3a9c1e"
API_TOKEN = "api-token-5b2d8e44"
SASL_PASSWORD = "sasl-pw-91c0d7aa"  # never usable here (the broker is plaintext), so it must not leak either


def test_no_secret_in_logs_metrics_status_or_errors(ray_cluster, tmp_path):
    import ray
    from ray import serve

    from actors.config import RedisSettings
    from tools.embedded import EmbeddedRedis
    from deployments.app import build_app
    from deployments.config import AppArgs, FleetArgs

    stack = ray_cluster
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text("cameras:\n  - id: vault\n  - id: bad-encoder\n    encoder: {name: pixels}\n")
    with EmbeddedRedis(password=REDIS_PASSWORD) as r:
        redis = RedisSettings(url=r.url, password=REDIS_PASSWORD)
        kafka = stack.kafka.model_copy(update={"sasl_password": SASL_PASSWORD})  # PLAINTEXT: carried, unused
        serve.run(build_app(AppArgs(model=TINY, redis=redis, num_cpus=0.2, gateway_num_cpus=0.1, api_token=API_TOKEN,
                                    fleet=FleetArgs(kafka=kafka, cameras_file=str(cameras), reload_s=0.5,
                                                    num_cpus=0.05))),
                  name="secrets", route_prefix="/secrets")
        try:
            port = stack.http_port
            wait_for(lambda: "vault" in http(port, "GET", "/secrets/v1/fleet", token=API_TOKEN)[1].get("cameras", {}),
                     timeout_s=60)
            Ingestor("vault", str(make_camera_video(tmp_path / "v.mp4", seconds=1, seed=40)), stack.kafka,
                     IngestSettings(size=64)).run()
            wait_for(lambda: "vault" in http(port, "GET", "/secrets/v1/cameras", token=API_TOKEN)[1].get("cameras", {}),
                     timeout_s=60)
            seen = []
            for path, token in (("/secrets/v1/fleet", API_TOKEN), ("/secrets/v1/cameras", API_TOKEN),
                                ("/secrets/v1/cameras", "wrong"), ("/secrets/v1/query", API_TOKEN)):
                status, body = http(port, "POST" if path.endswith("query") else "GET", path,
                                    {"camera": "nope", "question": "x"} if path.endswith("query") else None, token=token)
                seen.append(f"{status} {body}")
            r.kill()  # errors while the cache is down: logged and reported
            wait_for(lambda: http(port, "GET", "/secrets/v1/cameras", token=API_TOKEN)[0] == 503, timeout_s=30)
            seen.append(str(http(port, "GET", "/secrets/v1/cameras", token=API_TOKEN)))
            r.start()
            wait_for(lambda: http(port, "GET", "/secrets/v1/cameras", token=API_TOKEN)[0] == 200, timeout_s=60)
            seen.append(urllib.request.urlopen(stack.metrics_url, timeout=5).read().decode())
            session = ray._private.worker._global_node.get_session_dir_path()
            for path in glob.glob(os.path.join(session, "logs", "**", "*"), recursive=True):
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        seen.append(f.read().decode(errors="replace"))
            text = "\n".join(seen)
            assert "vault" in text and "bad-encoder" in text  # the material is real: it covers this run
            for secret in (REDIS_PASSWORD, API_TOKEN, SASL_PASSWORD):
                assert secret not in text, f"{secret[:5]}... leaked"
        finally:
            serve.delete("secrets")
