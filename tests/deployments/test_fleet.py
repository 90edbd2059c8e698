"""The camera fleet inside the Serve app (how a cluster runs it): the camera list is a file (a mounted
ConfigMap), edits add and remove camera actors, a bad edit is reported and counted, the stream goes on."""

import urllib.request

import pytest

from actors.config import IngestSettings
from actors.ingest import Ingestor
from actors.token_cache import RedisTokenStore
from streamdycoke.video import make_camera_video

from ..conftest import needs_isolated_network, wait_for
from .conftest import TINY, TOKEN
from .test_app import http

pytestmark = needs_isolated_network


def write(path, text):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomically, as a ConfigMap volume update does


def serve_with_fleet(ray_cluster, cameras_file, name: str) -> int:
    """Serve the app as a cluster does (camera fleet following ``cameras_file``); returns the HTTP port."""
    from ray import serve

    from deployments.app import build_app
    from deployments.config import AppArgs, FleetArgs

    stack = ray_cluster
    serve.run(build_app(AppArgs(model=TINY, redis=stack.redis, num_cpus=0.2, gateway_num_cpus=0.1, api_token=TOKEN,
                                fleet=FleetArgs(kafka=stack.kafka, cameras_file=str(cameras_file), reload_s=0.5,
                                                num_cpus=0.05))),
              name=name, route_prefix="/")
    return stack.http_port


@pytest.fixture(scope="module")
def fleet_app(ray_cluster, tmp_path_factory):
    from ray import serve

    d = tmp_path_factory.mktemp("fleet")
    cameras = d / "cameras.yaml"
    write(cameras, "cameras:\n  - id: yard\n")
    port = serve_with_fleet(ray_cluster, cameras, "fleet")
    yield port, cameras, d, ray_cluster
    serve.delete("fleet")


def fleet(port) -> dict:
    status, body = http(port, "GET", "/v1/fleet")
    assert status == 200, body
    return body


def test_cameras_follow_the_camera_file(fleet_app):
    import ray

    port, cameras, d, stack = fleet_app
    store = RedisTokenStore(stack.redis)
    wait_for(lambda: list(fleet(port)["cameras"]) == ["yard"], timeout_s=60)
    n = Ingestor("yard", str(make_camera_video(d / "yard.mp4", seconds=1, seed=11)),
                 stack.kafka, IngestSettings(size=64)).run().frames
    wait_for(lambda: (store.get_stats("yard") or {}).get("consumed") == n, timeout_s=90)
    assert store.last_frame_index("yard") is not None

    # add a camera and remove the first: one edit
    write(cameras, "cameras:\n  - id: gate\n    sampler: {max_fps: 5}\n")
    wait_for(lambda: list(fleet(port)["cameras"]) == ["gate"], timeout_s=60)
    assert fleet(port)["cameras"]["gate"]["config"]["sampler"]["max_fps"] == 5
    wait_for(lambda: _actor_gone("camera-yard"), timeout_s=30)
    m = Ingestor("gate", str(make_camera_video(d / "gate.mp4", seconds=1, seed=12)),
                 stack.kafka, IngestSettings(size=64)).run().frames
    wait_for(lambda: (store.get_stats("gate") or {}).get("consumed") == m, timeout_s=90)
    assert ray.get_actor("camera-gate") is not None


def test_a_bad_camera_file_is_reported_counted_and_the_cameras_go_on(fleet_app, ray_cluster):
    port, cameras, d, stack = fleet_app
    before = list(fleet(port)["cameras"])
    assert before
    write(cameras, "cameras:\n  - id: 'no spaces allowed'\n")
    wait_for(lambda: (fleet(port)["last_error"] or "").startswith("camera list"), timeout_s=30)
    assert "pattern" in fleet(port)["last_error"]
    assert list(fleet(port)["cameras"]) == before

    def errors() -> float:
        text = urllib.request.urlopen(stack.metrics_url, timeout=5).read().decode()
        lines = [ln for ln in text.splitlines() if ln.startswith("ray_streamdycoke_fleet_config_errors_total")]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    wait_for(lambda: errors() >= 1, timeout_s=30)
    rounds = fleet(port)["reconciles"]
    # six more rounds with the bad edit: at least 3 s (reload_s 0.5 between rounds), three metric reports
    wait_for(lambda: fleet(port)["reconciles"] >= rounds + 6, timeout_s=30)
    assert errors() == 1, "one bad edit is one error, however many rounds it stays"
    write(cameras, "cameras:\n  - id: gate\n    sampler: {max_fps: 5}\n")  # fixed: the error clears, nothing restarted
    wait_for(lambda: fleet(port)["last_error"] is None, timeout_s=30)
    assert fleet(port)["cameras"]["gate"]["restarts"] == 0


def test_a_camera_whose_encoder_cannot_feed_the_llm_is_refused_shown_and_counted(fleet_app):
    """Caught when the fleet reconciles, not at query time: the camera is not started, /v1/fleet says why,
    a metric counts it, and the other cameras go on."""
    port, cameras, d, stack = fleet_app
    write(cameras, "cameras:\n  - id: gate\n    sampler: {max_fps: 5}\n"
                   "  - id: pix\n    encoder: {name: pixels}\n"
                   "  - id: other\n    encoder: {weights: /models/some-other-checkpoint}\n")
    wait_for(lambda: set(fleet(port)["refused"]) == {"pix", "other"}, timeout_s=30)
    status = fleet(port)
    assert list(status["cameras"]) == ["gate"] and status["cameras"]["gate"]["restarts"] == 0
    assert "cannot feed" in status["refused"]["pix"] and "differ from the LLM" in status["refused"]["other"]
    assert _actor_gone("camera-pix") and _actor_gone("camera-other")

    def refused() -> float:
        text = urllib.request.urlopen(stack.metrics_url, timeout=5).read().decode()
        lines = [ln for ln in text.splitlines() if ln.startswith("ray_streamdycoke_fleet_cameras_refused")]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else -1.0

    wait_for(lambda: refused() == 2, timeout_s=30)
    write(cameras, "cameras:\n  - id: gate\n    sampler: {max_fps: 5}\n")  # removed: no longer refused
    wait_for(lambda: fleet(port)["refused"] == {}, timeout_s=30)
    wait_for(lambda: refused() == 0, timeout_s=30)


def _actor_gone(name: str) -> bool:
    import ray

    try:
        ray.get_actor(name)
    except ValueError:
        return True
    return False
