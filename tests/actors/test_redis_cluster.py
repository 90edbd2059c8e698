"""The token cache on a real Redis Cluster (Debian's redis-server: three primaries with a replica each):
cameras stream across its slots, a primary is killed mid-stream, its replica takes over, and the cameras
resume with every acknowledged frame stored once (a write the failover lost is found and stored again
from the topic, counted, never silent)."""

import shutil
import time

import pytest

from actors.config import KafkaSettings, RedisSettings
from streamdycoke.video import make_camera_video
from tools.embedded import EmbeddedKafka, LocalRedisCluster

from ..conftest import wait_for
from .test_faults import RESUME_S, Camera, assert_every_frame_stored_once, ingest_in_background

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-cli")),
                                 reason="needs Debian's redis-server and redis-tools (make system-deps)")]


def test_cameras_across_a_cluster_survive_a_primary_killed_mid_stream(tmp_path):
    with EmbeddedKafka() as k, LocalRedisCluster(node_timeout_ms=1000) as cluster:
        kafka = KafkaSettings(bootstrap=k.bootstrap)
        redis = RedisSettings(url=cluster.url, cluster=True, socket_timeout_s=1.0)
        # three cameras whose keys live on three different primaries
        names, owners = [], set()
        for i in range(200):
            owner = cluster.primary_of(f"sdk:{{c{i}}}:segs")
            if owner not in owners:
                names.append(f"c{i}")
                owners.add(owner)
            if len(names) == 3:
                break
        cams = {c: Camera(c, kafka, redis) for c in names}
        try:
            feeds = {c: ingest_in_background(c, make_camera_video(tmp_path / f"{c}.mp4", seconds=6, seed=20 + i), kafka)
                     for i, c in enumerate(names)}
            victim = names[0]
            store = cams[victim].store
            wait_for(lambda: (store.last_frame_index(victim) or -1) >= 40, timeout_s=60)
            primary = cluster.primary_of(f"sdk:{{{victim}}}:segs")
            cluster.kill(primary)
            killed = time.monotonic()
            sent_at_kill = feeds[victim][0].stats.frames  # frames ingested so far: more follow the kill
            wait_for(lambda: cluster.primary_of(f"sdk:{{{victim}}}:segs") not in (None, primary), timeout_s=30)
            promoted = time.monotonic() - killed
            for c, (ing, t) in feeds.items():
                t.join(60)
            for c, cam in cams.items():
                n = feeds[c][0].stats.frames
                wait_for(lambda: cam.worker.counters.consumed == n and cam.store.last_frame_index(c) == n - 1,
                         timeout_s=RESUME_S + 60)
                assert_every_frame_stored_once(cam.store, c, n)
                assert cam.worker.counters.processed == n, (c, cam.worker.counters)
                assert cam.worker.health()["status"] == "ok"
            faults = dict(cams[victim].worker.faults)
            # the kill was mid-stream (frames came after it), and what the victim saw of it, if anything (the
            # client's idempotent retries may ride out the whole failover), was the cache's
            assert sent_at_kill < feeds[victim][0].stats.frames, "the primary was killed after the stream ended"
            assert set(faults) <= {"cache", "cache_lost"}, faults
            for c in names[1:]:  # the other primaries' cameras never noticed (the cluster serves their slots)
                assert not cams[c].worker.faults, dict(cams[c].worker.faults)
            print(f"replica promoted {promoted:.1f} s after the kill; {victim}: faults {faults}, "
                  f"repaired {cams[victim].worker.counters.repaired} frames")
        finally:
            for cam in cams.values():
                cam.close()
