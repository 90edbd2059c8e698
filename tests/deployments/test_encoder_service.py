"""The vision encoder as a Serve deployment: camera actors send the frames they process there, and the
deployment batches frames of many cameras into one forward pass; tokens equal the in-actor encoder's."""

import threading

import numpy as np
import pytest

from actors.config import CameraConfig, IngestSettings
from actors.ingest import Ingestor
from streamdycoke import build_encoder
from streamdycoke.video import make_camera_video

from ..conftest import needs_isolated_network, wait_for
from .conftest import TINY, TOKEN

pytestmark = needs_isolated_network


@pytest.fixture(scope="module")
def encoder_app(ray_cluster):
    from ray import serve

    from deployments.app import build_app
    from deployments.config import AppArgs, EncoderServiceArgs
    from deployments.encoder import ENCODER_DEPLOYMENT

    serve.run(build_app(AppArgs(model=TINY, redis=ray_cluster.redis, num_cpus=0.1, gateway_num_cpus=0.1,
                                api_token=TOKEN, encoder=EncoderServiceArgs(num_cpus=0.2, batch_wait_timeout_s=0.05))),
              name="enc", route_prefix="/enc")
    yield serve.get_deployment_handle(ENCODER_DEPLOYMENT, app_name="enc")
    serve.delete("enc")


def test_remote_tokens_equal_local_ones_and_concurrent_frames_are_batched(encoder_app):
    from actors.encoder_client import RemoteEncoder

    local = build_encoder(TINY)
    remote = RemoteEncoder(TINY, encoder_app)
    assert (remote.grid, remote.dim, remote.input_size) == (local.grid, local.dim, local.input_size)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, *local.input_size, 3), dtype=np.uint8)
    np.testing.assert_allclose(remote.encode(frames).numpy(), local.encode(frames).numpy(), rtol=1e-4, atol=1e-4)
    odd = rng.integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)  # another size: encoded in its own group
    np.testing.assert_allclose(remote.encode(odd).numpy(), local.encode(odd).numpy(), rtol=1e-4, atol=1e-4)
    before = encoder_app.stats.remote().result()
    threads = [threading.Thread(target=remote.encode, args=(frames[i % 3][None],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = encoder_app.stats.remote().result()
    assert after["frames"] - before["frames"] == 8
    assert after["batches"] - before["batches"] < 8, "frames sent at once were batched together"
    with pytest.raises(Exception, match="uint8"):
        encoder_app.encode.remote(np.zeros((4, 4, 3), np.float32)).result()


def test_camera_actors_encode_through_the_service(encoder_app, ray_cluster, tmp_path):
    from actors.supervisor import CameraSupervisor

    stack = ray_cluster
    sup = CameraSupervisor(stack.kafka, stack.redis, TINY, encoder_handle=encoder_app)
    n = {}
    try:
        before = encoder_app.stats.remote().result()["frames"]
        for cam, seed in (("svc-a", 51), ("svc-b", 52)):
            video = make_camera_video(tmp_path / f"{cam}.mp4", seconds=1, seed=seed)
            n[cam] = Ingestor(cam, str(video), stack.kafka, IngestSettings(size=64)).run().frames
            sup.add(CameraConfig(id=cam))
        wait_for(lambda: all(sup.stats()[c].get("consumed") == n[c] for c in n), timeout_s=120)
        stats = sup.stats()
        processed = sum(stats[c]["processed"] for c in n)
        assert processed > 0 and all(stats[c]["processed"] + stats[c]["skipped"] == n[c] for c in n)
        # every processed frame went through the service (and nothing else of these cameras did)
        assert encoder_app.stats.remote().result()["frames"] - before == processed
    finally:
        sup.shutdown()


def test_differential_encoding_through_the_service_keeps_each_cameras_state_on_its_replica(encoder_app):
    """Two cameras' frames, sent at once and in several requests, give the tokens this process's differential
    encoder gives each camera alone: each camera's state is its own, its frames encoded in order."""
    from actors.encoder_client import RemoteEncoder
    from streamdycoke.encoders.differential import DifferentialConfig, DifferentialEncoder

    cfg = DifferentialConfig(threshold=0.02, halo=0, refresh_every=0)
    local = build_encoder(TINY)
    rng = np.random.default_rng(3)
    seqs = {}
    for cam in ("diff-a", "diff-b"):
        f = np.repeat(rng.integers(0, 256, (1, *local.input_size, 3), dtype=np.uint8), 4, axis=0)
        for t in range(1, 4):  # a small square moves: a few patches change a frame
            f[t, 8 * t:8 * t + 8, 8:16] = 255
        seqs[cam] = f
    want = {cam: DifferentialEncoder(local, cfg).encode(f).numpy() for cam, f in seqs.items()}
    remotes = {cam: RemoteEncoder(TINY, encoder_app, camera=cam, differential=cfg) for cam in seqs}
    got = {cam: [] for cam in seqs}
    before = encoder_app.stats.remote().result()

    def send(cam, part):
        got[cam].append(remotes[cam].encode(seqs[cam][part]).numpy())

    for part in (slice(0, 2), slice(2, 4)):  # both cameras at once, two frames each, twice
        threads = [threading.Thread(target=send, args=(cam, part)) for cam in seqs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for cam in seqs:
        np.testing.assert_allclose(np.concatenate(got[cam]), want[cam], rtol=1e-4, atol=1e-4)
    after = encoder_app.stats.remote().result()
    assert after["frames"] - before["frames"] == 8
    assert after["recomputed_share"] < 1.0, "frames after each camera's first recomputed only what changed"
