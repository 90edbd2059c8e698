"""The Serve application end to end: camera actors -> Redis -> Serve LLM, over real HTTP."""

import json
import urllib.error
import urllib.request

import pytest

from actors.config import CameraConfig, IngestSettings
from actors.ingest import Ingestor
from streamdycoke import EncoderSpec
from streamdycoke.video import make_camera_video

TINY = EncoderSpec(weights=None)  # the tiny random LLaVA-OneVision (no weights here), for LLM and cameras alike

from ..conftest import needs_isolated_network, wait_for

pytestmark = needs_isolated_network


def http(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def app(ray_cluster, tmp_path_factory):
    from ray import serve

    from actors.ray_actor import CameraSupervisor
    from deployments.app import build_app
    from deployments.config import AppArgs

    stack = ray_cluster
    sup = CameraSupervisor(stack.kafka, stack.redis, TINY)
    video = make_camera_video(tmp_path_factory.mktemp("v") / "a.mp4", seconds=3, seed=6)
    n = Ingestor("lobby", str(video), stack.kafka, IngestSettings(size=64)).run().frames
    sup.add(CameraConfig(id="lobby"))  # no encoder named: the LLM's own (tiny, offline) tower
    wait_for(lambda: sup.stats()["lobby"].get("consumed") == n, timeout_s=90)
    serve.run(build_app(AppArgs(model=TINY, redis=stack.redis, num_cpus=0.25)), name="sdk", route_prefix="/")
    yield stack.http_port, sup
    serve.delete("sdk")
    sup.shutdown()


def test_query_answers_with_fewer_visual_tokens_than_the_uncompressed_window(app):
    port, _ = app
    status, r = http(port, "POST", "/v1/query",
                     {"camera": "lobby", "question": "is anyone there?", "window_s": 10, "max_new_tokens": 4})
    assert status == 200, r
    assert r["answer"] and r["usage"]["new_tokens"] == 4
    assert 0 < r["usage"]["visual_tokens"] < r["usage"]["visual_tokens_uncompressed"]
    assert set(r["latency_ms"]) >= {"cache_fetch", "queue", "prefill", "decode", "total"}


def test_query_metrics_are_exported_per_stage_with_batch_sizes(app, ray_cluster):
    from ..conftest import wait_for

    port, _ = app
    metrics_port = ray_cluster.metrics_port
    assert http(port, "POST", "/v1/query", {"camera": "lobby", "question": "and now?", "max_new_tokens": 2})[0] == 200

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()

    def has_all() -> bool:
        text = scrape()
        return all(f'stage="{s}"' in text for s in ("cache_fetch", "queue", "prefill", "decode", "total")) and \
            "ray_streamdycoke_llm_batch_size_requests_count" in text and 'status="ok"' in text

    wait_for(has_all, timeout_s=60)
    text = scrape()
    ok = [line for line in text.splitlines() if line.startswith("ray_streamdycoke_queries_total") and 'status="ok"' in line]
    assert ok and float(ok[0].rsplit(" ", 1)[1]) >= 2  # this query and the one before


def test_cameras_and_health(app):
    port, sup = app
    status, r = http(port, "GET", "/v1/cameras")
    assert status == 200 and "lobby" in r["cameras"]
    cam = r["cameras"]["lobby"]
    assert cam["frames_cached"] > 0 and 0 < cam["keep_ratio"] < 1
    assert http(port, "GET", "/healthz") == (200, {"status": "ok"})


@pytest.mark.parametrize("body, code, words", [
    ({"camera": "nope", "question": "hi"}, 404, "unknown camera"),
    ({"camera": "lobby"}, 422, "question"),
    ({"camera": "lobby", "question": "hi", "window_s": -1}, 422, "window_s"),
    ({"camera": "lobby", "question": "hi", "window_s": 10_000}, 400, "over the cache's retention_s"),
])
def test_bad_requests_get_a_clear_4xx(app, body, code, words):
    port, _ = app
    status, r = http(port, "POST", "/v1/query", body)
    assert status == code and words in json.dumps(r)


def test_fleet_status_is_404_when_the_app_runs_no_fleet(app):
    port, _ = app
    status, body = http(port, "GET", "/v1/fleet")
    assert status == 404 and "no camera fleet" in body["detail"]
