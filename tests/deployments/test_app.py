"""The Serve application end to end: camera actors -> Redis -> Serve LLM, over real HTTP."""

import json
import urllib.error
import urllib.request

import pytest

from actors.camera import CameraConfig, KafkaSettings
from actors.ingest import IngestSettings, Ingestor
from actors.token_cache import RedisSettings
from streamdycoke.video import make_camera_video

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

    from actors.embedded import free_port
    from actors.ray_actor import CameraSupervisor
    from deployments.app import build_app

    k, r, _ = ray_cluster
    sup = CameraSupervisor(KafkaSettings(bootstrap=k.bootstrap), RedisSettings(url=r.url))
    video = make_camera_video(tmp_path_factory.mktemp("v") / "a.mp4", seconds=3, seed=6)
    n = Ingestor("lobby", str(video), IngestSettings(bootstrap=k.bootstrap, size=64)).run().frames
    sup.add(CameraConfig(id="lobby", encoder="llava-onevision"))  # the LLM's own (tiny, offline) tower
    wait_for(lambda: sup.stats()["lobby"].get("consumed") == n, timeout_s=90)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"model": None, "redis": {"url": r.url}, "num_cpus": 0.25}), name="sdk", route_prefix="/")
    yield port, sup
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
    ({"camera": "lobby", "question": "hi", "window_s": 10_000}, 400, "over the limit"),
])
def test_bad_requests_get_a_clear_4xx(app, body, code, words):
    port, _ = app
    status, r = http(port, "POST", "/v1/query", body)
    assert status == code and words in json.dumps(r)
