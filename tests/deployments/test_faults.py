"""Faults on the serving side, on a real local Ray and Serve: an LLM replica killed during a query, the
camera fleet's controller killed, and Redis killed under running camera actors, seen through the API and
the metrics."""

import threading
import time
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

RESUME_S = 30.0  # a new Serve replica (or a restarted camera actor) takes a few seconds on 2 cores


def _replica(app: str, deployment: str):
    import ray

    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == "serve" and f"{app}#{deployment}" in a["name"]]
    assert len(names) == 1, names
    return ray.get_actor(names[0]["name"], namespace="serve")


@pytest.fixture(scope="module")
def llm_app(ray_cluster, tmp_path_factory):
    from ray import serve

    from actors.supervisor import CameraSupervisor
    from deployments.app import build_app
    from deployments.config import AppArgs

    stack = ray_cluster
    sup = CameraSupervisor(stack.kafka, stack.redis, TINY)
    video = make_camera_video(tmp_path_factory.mktemp("v") / "q.mp4", seconds=2, seed=31)
    n = Ingestor("porch", str(video), stack.kafka, IngestSettings(size=64)).run().frames
    from actors.config import CameraConfig

    sup.add(CameraConfig(id="porch"))
    wait_for(lambda: sup.stats()["porch"].get("consumed") == n, timeout_s=90)
    serve.run(build_app(AppArgs(model=TINY, redis=stack.redis, num_cpus=0.25, api_token=TOKEN, query_timeout_s=30)),
              name="llmkill", route_prefix="/llmkill")
    yield stack.http_port
    serve.delete("llmkill")
    sup.shutdown()


def test_llm_replica_killed_during_a_query_gives_an_answer_or_a_retryable_error(llm_app):
    import ray

    port = llm_app
    body = {"camera": "porch", "question": "what moves?", "max_new_tokens": 1024}  # a long answer: seconds
    result = {}

    def ask():
        t0 = time.monotonic()
        result["reply"] = http(port, "POST", "/llmkill/v1/query", body, timeout=90)
        result["s"] = time.monotonic() - t0

    replica = _replica("llmkill", "LLMDeployment")
    t = threading.Thread(target=ask)
    t.start()
    # killed while it holds the query (Serve's replica actor counts the requests it is running)
    wait_for(lambda: ray.get(replica.get_num_ongoing_requests.remote(), timeout=10) > 0, timeout_s=30)
    ray.kill(replica, no_restart=True)
    t.join(90)
    assert not t.is_alive(), "the caller never hangs"
    status, r = result["reply"]
    assert status == 200 or (status == 503 and "retry" in r["detail"]), (status, r)
    # Serve replaces the replica; a retry is answered
    deadline = time.monotonic() + RESUME_S + 30
    while time.monotonic() < deadline:
        status, r = http(port, "POST", "/llmkill/v1/query", {**body, "max_new_tokens": 4}, timeout=60)
        if status == 200:
            break
        assert status == 503, (status, r)
        time.sleep(1)
    assert status == 200 and r["answer"]


def test_camera_fleet_controller_killed_and_restarted(ray_cluster, tmp_path):
    """The fleet's replica owns the camera actors: killed, they go with it; Serve starts a new replica,
    which starts them again, and each resumes from its committed offset: nothing lost, nothing twice."""
    import ray
    from ray import serve

    from deployments.app import build_app
    from deployments.config import AppArgs, FleetArgs

    stack = ray_cluster
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text("cameras:\n  - id: gate2\n    sampler: null\n")
    serve.run(build_app(AppArgs(model=TINY, redis=stack.redis, num_cpus=0.2, gateway_num_cpus=0.1, api_token=TOKEN,
                                fleet=FleetArgs(kafka=stack.kafka, cameras_file=str(cameras), reload_s=0.5,
                                                num_cpus=0.05))),
              name="fleetkill", route_prefix="/fleetkill")
    store = RedisTokenStore(stack.redis)
    try:
        wait_for(lambda: http(stack.http_port, "GET", "/fleetkill/v1/fleet")[1].get("cameras", {}).get("gate2"),
                 timeout_s=60)
        ing = Ingestor("gate2", str(make_camera_video(tmp_path / "g.mp4", seconds=5, seed=32)), stack.kafka,
                       IngestSettings(size=64, realtime=True))
        t = threading.Thread(target=ing.run, daemon=True)
        t.start()
        wait_for(lambda: (store.last_frame_index("gate2") or -1) >= 20, timeout_s=60)
        ray.kill(_replica("fleetkill", "CameraFleet"), no_restart=True)
        killed = time.monotonic()
        before = store.last_frame_index("gate2")
        wait_for(lambda: (store.last_frame_index("gate2") or -1) > before, timeout_s=RESUME_S + 30)
        assert time.monotonic() - killed < RESUME_S + 30
        t.join(60)
        n = ing.stats.frames
        wait_for(lambda: store.last_frame_index("gate2") == n - 1, timeout_s=60)
        assert [s.frame_index for s in store.read("gate2")] == list(range(n)), "nothing lost, nothing twice"
    finally:
        serve.delete("fleetkill")


def test_redis_killed_under_running_cameras_is_counted_shown_and_survived(ray_cluster, tmp_path):
    from ray import serve

    from actors.config import CameraConfig, RedisSettings
    from tools.embedded import EmbeddedRedis
    from actors.supervisor import CameraSupervisor
    from deployments.app import build_app
    from deployments.config import AppArgs

    stack = ray_cluster
    with EmbeddedRedis(durable=True) as r:
        redis = RedisSettings(url=r.url, socket_timeout_s=1.0)
        sup = CameraSupervisor(stack.kafka, redis, TINY)
        serve.run(build_app(AppArgs(model=TINY, redis=redis, num_cpus=0.2, gateway_num_cpus=0.1, api_token=TOKEN)),
                  name="redkill", route_prefix="/redkill")
        store = RedisTokenStore(redis)
        try:
            sup.add(CameraConfig(id="yard2", sampler=None))
            ing = Ingestor("yard2", str(make_camera_video(tmp_path / "y.mp4", seconds=5, seed=33)), stack.kafka,
                           IngestSettings(size=64, realtime=True))
            t = threading.Thread(target=ing.run, daemon=True)
            t.start()
            wait_for(lambda: (store.last_frame_index("yard2") or -1) >= 20, timeout_s=60)
            r.kill()
            wait_for(lambda: http(stack.http_port, "GET", "/redkill/v1/cameras")[0] != 200, timeout_s=30)
            status, body = http(stack.http_port, "GET", "/redkill/v1/cameras")
            assert status == 503 and "retry" in body["detail"], "a clear, retryable error while the cache is down"
            r.start()
            t.join(60)
            n = ing.stats.frames
            wait_for(lambda: store.last_frame_index("yard2") == n - 1, timeout_s=60)
            assert [s.frame_index for s in store.read("yard2")] == list(range(n))
            def camera() -> dict:
                return http(stack.http_port, "GET", "/redkill/v1/cameras")[1]["cameras"]["yard2"]

            wait_for(lambda: camera()["status"] == "ok" and camera()["faults"].get("cache", 0) >= 1, timeout_s=30)
            assert "ConnectionError" in (camera()["last_fault"] or "")

            def faults() -> float:
                text = urllib.request.urlopen(stack.metrics_url, timeout=5).read().decode()
                return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                           if ln.startswith("ray_streamdycoke_camera_faults_total") and 'camera="yard2"' in ln)

            wait_for(lambda: faults() >= 1, timeout_s=30)
        finally:
            serve.delete("redkill")
            sup.shutdown()


def test_an_app_whose_llm_resources_never_appear_is_given_up_on_saying_what_it_waits_for(ray_cluster):
    """``streamdycoke run`` against a cluster without the accelerator its LLM replicas ask for: the deploy
    gives up at its deadline, naming the deployment Serve still waits for, instead of waiting forever."""
    from ray import serve

    from deployments.app import build_app
    from deployments.config import AppArgs
    from deployments.deploy import DeployTimeout, deploy_app

    stack = ray_cluster
    app = AppArgs(model=TINY, redis=stack.redis, num_cpus=0.2, gateway_num_cpus=0.1, api_token=TOKEN,
                  resources={"accelerator": 1})  # no node of the test session's Ray declares one
    t0 = time.monotonic()
    try:
        with pytest.raises(DeployTimeout) as e:
            deploy_app(build_app(app), "noaccel", 8.0, route_prefix="/noaccel")
        assert time.monotonic() - t0 < 60
        assert "'noaccel' was not running after 8 s" in str(e.value) and "LLMDeployment" in str(e.value), str(e.value)
    finally:
        serve.delete("noaccel")
