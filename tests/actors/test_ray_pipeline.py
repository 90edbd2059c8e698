"""Camera actors on a real local Ray, with a real broker and Redis. Runs inside a loopback-only
network namespace (``make test`` enters one; see ENVIRONMENT.md: Ray binds routable addresses)."""

import pytest

from actors.config import CameraConfig, IngestSettings
from actors.ingest import Ingestor
from actors.token_cache import RedisTokenStore
from streamdycoke.video import make_camera_video

from ..conftest import needs_isolated_network, wait_for

pytestmark = needs_isolated_network


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    return ray_cluster


def test_two_camera_actors_account_for_every_frame(cluster, tmp_path):
    from actors.supervisor import CameraSupervisor

    stack = cluster
    sup = CameraSupervisor(stack.kafka, stack.redis)
    counts = {}
    for cam, seed in (("ray-1", 1), ("ray-2", 2)):
        video = make_camera_video(tmp_path / f"{cam}.mp4", seconds=2, seed=seed)
        counts[cam] = Ingestor(cam, str(video), stack.kafka, IngestSettings(size=64)).run().frames
        if cam == "ray-1":  # one malformed message: dead-lettered, counted, and the stream goes on
            from kafka import KafkaProducer

            p = KafkaProducer(bootstrap_servers=stack.kafka.bootstrap)
            p.send("frames.ray-1", b"not a frame")
            p.flush()
            p.close()
            counts[cam] += 1
        sup.add(CameraConfig(id=cam))
    wait_for(lambda: all(s.get("consumed") == counts[c] for c, s in sup.stats().items()))
    stats = sup.stats()
    store = RedisTokenStore(stack.redis)
    for cam, s in stats.items():
        assert s["consumed"] == s["processed"] + s["skipped"] + s["dead_lettered"] == counts[cam]
        assert len(store.read(cam)) == s["processed"] and s["tokens_kept"] < s["tokens_in"]

    # Ray's metrics port exposes every named metric with the values this run produced
    from actors.metrics import CAMERA_METRIC_NAMES

    port = cluster.metrics_port

    def scraped() -> dict:
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("ray_streamdycoke_") and 'camera="ray-1"' in line:
                out[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
        return out

    s1 = stats["ray-1"]
    def settled() -> bool:  # the exporter lags the actor by up to one report interval
        m = scraped()
        return (m.get("ray_streamdycoke_frames_processed_total") == s1["processed"]
                and m.get("ray_streamdycoke_frames_consumed_total") == s1["consumed"]
                and m.get("ray_streamdycoke_consumer_lag_frames") == 0)

    wait_for(settled, timeout_s=60)
    m = scraped()
    for name in CAMERA_METRIC_NAMES:
        if name == "streamdycoke_camera_faults_total":
            continue  # Ray exports a counter after its first increment: no fault here (the fault tests see it)
        base = "ray_" + name
        assert any(k == base or k.startswith(base + "_") for k in m), f"{base} not exported"
    assert m["ray_streamdycoke_frames_consumed_total"] == s1["consumed"]
    assert m["ray_streamdycoke_frames_dead_lettered_total"] == s1["dead_lettered"] == 1
    assert m["ray_streamdycoke_frames_skipped_total"] == s1["skipped"]
    assert m["ray_streamdycoke_tokens_kept_total"] == s1["tokens_kept"]
    assert m["ray_streamdycoke_frame_to_cache_seconds_count"] == s1["processed"]
    assert m["ray_streamdycoke_consumer_lag_frames"] == 0
    sup.shutdown()


def test_killed_actor_restarts_and_resumes_without_loss_or_duplicates(cluster, tmp_path):
    import ray

    from actors.supervisor import CameraSupervisor

    stack = cluster
    cam = "ray-kill"
    video = make_camera_video(tmp_path / "kill.mp4", seconds=10, seed=5)
    n = Ingestor(cam, str(video), stack.kafka, IngestSettings(size=64)).run().frames
    sup = CameraSupervisor(stack.kafka.model_copy(update={"max_poll_records": 2}), stack.redis)
    sup.add(CameraConfig(id=cam, sampler=None))  # every frame processed, so every frame stored
    store = RedisTokenStore(stack.redis)
    wait_for(lambda: (store.last_frame_index(cam) or 0) >= 10)
    ray.kill(sup.actors[cam], no_restart=False)  # the process dies mid-stream; Ray restarts it
    at_kill = store.last_frame_index(cam)
    assert at_kill < n - 1, "killed mid-stream"
    wait_for(lambda: sup.restarts[cam] >= 1 and store.last_frame_index(cam) == n - 1, every=sup.supervise)
    assert [s.frame_index for s in store.read(cam)] == list(range(n)), "no frame lost, none stored twice"
    sup.shutdown()


def test_cameras_take_slots_not_cpu_and_one_that_cannot_be_placed_is_reported(cluster):
    """Sixteen camera actors on this 2-CPU Ray (the embedded default's slots) all start, though Serve's
    replicas hold CPU; a camera asking for more slots than the cluster has is reported with why, never
    silently idle, and removing it clears the report."""
    import ray

    from actors.placement import CAMERA_RESOURCE
    from actors.supervisor import CameraSupervisor

    assert ray.cluster_resources()[CAMERA_RESOURCE] == cluster.camera_slots >= 16
    sup = CameraSupervisor(cluster.kafka, cluster.redis)
    many = [CameraConfig(id=f"slot-{i}", encoder={"name": "pixels"}) for i in range(16)]
    big = CameraSupervisor(cluster.kafka, cluster.redis, actor_options={"resources": {CAMERA_RESOURCE: 1000}},
                           placement_grace_s=1.0)
    try:
        sup.app_model = many[0].encoder  # these cameras encode with pixels: cheap to start sixteen
        for cam in many:
            sup.add(cam)
        assert sup.wait_ready(timeout_s=120), sup.unplaced
        assert sup.unplaced == {} and len(sup.stats()) == 16
        big.app_model = many[0].encoder
        big.add(CameraConfig(id="greedy", encoder={"name": "pixels"}))
        wait_for(lambda: "greedy" in big.check_placement(), timeout_s=30)
        why = big.unplaced["greedy"]
        assert why.startswith("more than the cluster has") and "1000" in why
        assert f"{cluster.camera_slots:g} camera slots" in why
        assert big.stats()["greedy"]["error"] == "unplaced"
        assert not big.wait_ready(timeout_s=5)
        big.remove("greedy")
        assert big.unplaced == {} and big.check_placement() == {}
    finally:
        sup.shutdown()
        big.shutdown()
