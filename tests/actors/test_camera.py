"""CameraWorker against a real broker (tansu) and a real Redis (Valkey), both started by the tests."""

import time

import pytest
from kafka import KafkaProducer

from actors.camera import CameraWorker
from actors.config import CameraConfig, IngestSettings, KafkaSettings, RedisSettings
from tools.embedded import EmbeddedKafka, EmbeddedRedis
from actors.frames import encode_frame
from actors.ingest import Ingestor
from actors.token_cache import RedisTokenStore
from streamdycoke.video import make_camera_video

from .test_ingest import consume_all


@pytest.fixture(scope="module")
def services():
    with EmbeddedKafka() as k, EmbeddedRedis() as r:
        yield k, r


def worker(services, cam, **kw):
    k, r = services
    w = CameraWorker(CameraConfig(id=cam, **kw), KafkaSettings(bootstrap=k.bootstrap, dead_letter_topic=f"dlq.{cam}"),
                     RedisTokenStore(RedisSettings(url=r.url)))
    w.start()
    return w


def drain(w, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        w.step()
        if w.lag() == 0:
            return
    raise TimeoutError("worker did not catch up")


def ingest(services, cam, seconds, seed, tmp_path):
    k, _ = services
    video = make_camera_video(tmp_path / f"{cam}.mp4", seconds=seconds, seed=seed)
    return Ingestor(cam, str(video), KafkaSettings(bootstrap=k.bootstrap), IngestSettings(size=64)).run().frames


def test_two_cameras_every_frame_accounted_for_and_cached(services, tmp_path):
    for cam, seed in (("cam-1", 1), ("cam-2", 2)):
        n = ingest(services, cam, 2, seed, tmp_path)
        w = worker(services, cam)
        drain(w)
        c = w.counters
        assert c.consumed == n == c.processed + c.skipped + c.dead_lettered
        stored = w.store.read(cam)
        assert len(stored) == c.processed and stored[0].keyframe
        assert sum(s.num_kept for s in stored) == c.tokens_kept < c.tokens_in
        w.stop()


def test_a_worker_started_before_its_camera_publishes_gets_every_frame(services, tmp_path):
    cam = "cam-early"
    w = worker(services, cam)  # the topic does not exist yet: the worker creates it
    assert w.lag() == 0
    n = ingest(services, cam, 1, 4, tmp_path)
    drain(w)
    c = w.counters
    assert c.consumed == n == 30 and c.processed + c.skipped == n
    assert w.store.last_frame_index(cam) is not None
    w.stop()


def test_malformed_and_foreign_messages_are_dead_lettered_and_the_stream_goes_on(services, tmp_path):
    k, _ = services
    cam = "cam-bad"
    ingest(services, cam, 0.5, 3, tmp_path)  # 15 good frames, then garbage, then a frame of another camera
    import numpy as np

    p = KafkaProducer(bootstrap_servers=k.bootstrap)
    p.send(f"frames.{cam}", b"\x00garbage")
    p.send(f"frames.{cam}", encode_frame("someone-else", 15, time.time(), np.zeros((64, 64, 3), np.uint8)))
    p.send(f"frames.{cam}", encode_frame(cam, 16, time.time() + 1, np.full((64, 64, 3), 200, np.uint8)))
    p.flush()
    w = worker(services, cam)
    drain(w)
    c = w.counters
    assert c.dead_lettered == 2 and c.consumed == 18 == c.processed + c.skipped + c.dead_lettered
    assert w.store.last_frame_index(cam) == 16, "the frame after the bad ones was processed"
    dlq = consume_all(k.bootstrap, f"dlq.{cam}", 2)
    reasons = sorted(dict(r.headers)["reason"].decode() for r in dlq)
    assert reasons == ["truncated", "unknown_camera"]
    assert b"\x00garbage" in [r.value for r in dlq], "the original bytes are kept"


def test_a_crashed_worker_resumes_from_the_committed_offset_losing_and_duplicating_nothing(services, tmp_path):
    cam = "cam-crash"
    n = ingest(services, cam, 2, 4, tmp_path)
    w = worker(services, cam, sampler=None)  # process every frame, so every frame must end up stored
    w.kafka = w.kafka.model_copy(update={"max_poll_records": 8})
    w.step()
    w.step()
    # crash after the third batch reached Redis but before its offset was committed
    w.reader.consumer.commit = lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("crash"))
    with pytest.raises(RuntimeError):
        w.step()
    stored_before = w.store.last_frame_index(cam)
    w.stop()
    w2 = worker(services, cam, sampler=None)
    assert w2.pipeline.state.last_frame_index == stored_before, "window rebuilt from the cache"
    drain(w2)
    # the uncommitted batch came back: already stored, so not stored again; never counted (its commit failed),
    # so counted now: across both workers every frame counts exactly once
    assert w.counters.processed == 16 and w2.counters.replayed == 0
    assert w.counters.consumed + w2.counters.consumed == n == w.counters.processed + w2.counters.processed
    stored = w2.store.read(cam)
    assert [s.frame_index for s in stored] == list(range(n)), "no frame lost, none stored twice"
    w2.stop()


def test_bad_camera_config_is_rejected_with_a_clear_error():
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="min_fps"):
        CameraConfig(id="c", sampler={"min_fps": 20, "max_fps": 10})  # the sampler's own check, once
    with pytest.raises(pydantic.ValidationError):
        CameraConfig(id="bad id with spaces")
    with pytest.raises(pydantic.ValidationError, match="max_fpz"):  # a misspelt key is an error, not a default
        CameraConfig(id="c", sampler={"max_fpz": 10})
    with pytest.raises(pydantic.ValidationError, match="window"):
        CameraConfig(id="c", window=8)  # the window lives in stream:, once


def test_cameras_file_is_validated_with_errors_naming_the_field(tmp_path):
    from actors.config import load_cameras

    f = tmp_path / "cameras.yaml"
    f.write_text("cameras:\n  - id: a\n    source: rtsp://cam/a\n    source_options: {rtsp_transport: tcp}\n  - id: b\n")
    cams = load_cameras(str(f))
    assert [c.id for c in cams] == ["a", "b"] and cams[0].source_options == {"rtsp_transport": "tcp"}
    f.write_text("cameras:\n  - id: a\n  - id: a\n")
    with pytest.raises(ValueError, match="unique; repeated: a"):
        load_cameras(str(f))
    f.write_text("cameras:\n  - id: a\n    sampler: {max_fps: zero}\n")
    with pytest.raises(ValueError, match="max_fps"):
        load_cameras(str(f))
    f.write_text("cameras: [ {id: a\n")  # broken YAML: a ValueError naming the file, not a YAML crash
    with pytest.raises(ValueError, match="cameras.yaml: not valid YAML"):
        load_cameras(str(f))
    f.write_text("- id: a\n")
    with pytest.raises(ValueError, match="expected a mapping at the top level, got list"):
        load_cameras(str(f))


def test_kafka_security_settings_reach_every_client():
    """SASL/SCRAM and TLS: one settings object, one place that builds every client's connection settings."""
    import ast
    from pathlib import Path

    import pydantic

    k = KafkaSettings(bootstrap="b:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      sasl_username="cam", sasl_password="sc4am", ssl_cafile="/ca.pem")
    assert k.client_kwargs() == {"bootstrap_servers": "b:9093", "security_protocol": "SASL_SSL",
                                 "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "cam",
                                 "sasl_plain_password": "sc4am", "ssl_check_hostname": True, "ssl_cafile": "/ca.pem"}
    assert "sc4am" not in repr(k) and "sc4am" not in k.model_dump_json()
    with pytest.raises(pydantic.ValidationError, match="SASL_PLAINTEXT needs"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="cam")
    # every kafka-python client the pipeline builds takes its connection settings from client_kwargs()
    root = Path(__file__).resolve().parents[2]
    for path in [*(root / "actors").glob("*.py"), *(root / "deployments").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("KafkaConsumer", "KafkaProducer",
                                                                             "KafkaAdminClient"):
                assert any(isinstance(kw.value, ast.Call) and getattr(kw.value.func, "attr", "") == "client_kwargs"
                           for kw in node.keywords if kw.arg is None), f"{path.name}:{node.lineno}"


def test_edge_sampling_sends_only_chosen_frames_and_every_frame_stays_accounted_for(services, tmp_path):
    """Ingest runs the camera's sampler: it sends only the frames to process (resized), the rest are
    accounted for by skip counts; the actor does not sample again, and across a restart of ingest and
    of the worker every ingested frame is exactly one of processed or skipped, stored once."""
    from actors.frames import decode_frame
    from streamdycoke.sampler import SamplerConfig

    k, _ = services
    cam = "cam-edge"
    sampler = SamplerConfig(min_fps=2, max_fps=10)
    video = make_camera_video(tmp_path / "edge.mp4", seconds=2, seed=9)
    kafka = KafkaSettings(bootstrap=k.bootstrap)
    first = Ingestor(cam, str(video), kafka, IngestSettings(size=64, max_frames=37), sampler=sampler).run()
    assert first.frames == 37 == first.published + first.skipped and 0 < first.published < 37
    assert first.times.summary_ms()["sample"]["n"] == 37 and first.times.summary_ms()["resize"]["n"] == first.published
    w = worker(services, cam, sampler=sampler.__dict__)
    drain(w)
    mid = w.counters.processed
    w.stop()  # a restart of the worker and of ingest (indices continue where the topic ends)
    second = Ingestor(cam, str(video), kafka, IngestSettings(size=64), sampler=sampler).run()
    w2 = worker(services, cam, sampler=sampler.__dict__)
    drain(w2)
    n = first.frames + second.frames
    sent = consume_all(k.bootstrap, f"frames.{cam}", n)
    msgs = [decode_frame(r.value) for r in sent]
    assert sum(m.frames for m in msgs) == n == 37 + 60 - 0  # the second run ingested the whole 2 s clip
    with_pixels = sum(m.rgb is not None for m in msgs)
    assert with_pixels == first.published + second.published < n // 2  # most frames never crossed Kafka
    c1, c2 = w.counters, w2.counters
    assert c1.consumed + c2.consumed == n
    assert c1.processed + c2.processed == with_pixels  # the actor processed exactly what the edge chose
    assert c1.skipped + c2.skipped == n - with_pixels and c1.dead_lettered + c2.dead_lettered == 0
    stored = w2.store.read(cam)
    assert len(stored) == with_pixels == len({s.frame_index for s in stored}) and mid == c1.processed
    assert [s.frame_index for s in stored] == [m.frame_index for m in msgs if m.rgb is not None]
    # read back from offset 0: every ingested index accounted for, and the skipped ones (never sent) named as such
    from actors.topics import topic_indices

    accounted, skipped = topic_indices(kafka, cam)
    assert accounted == set(range(n)) and skipped == set(range(n)) - {s.frame_index for s in stored}
    assert [[0, first.frames - 1]] == first.acked and [[first.frames, n - 1]] == second.acked
    w2.stop()


def test_ingest_sizes_a_camera_for_the_encoder_it_names_when_that_size_is_fixed():
    """A fixed-size encoder gives its input size; a camera naming none, or a LLaVA tower (whose size is in
    weights an ingest host need not have), gets the size ingest was given for the app's model."""
    assert CameraConfig(id="a").frame_size(384) == 384
    assert CameraConfig(id="b", encoder={"name": "efficientnet-lite0"}).frame_size(384) == 224
    assert CameraConfig(id="c", encoder={"name": "llava-onevision", "weights": "/nowhere"}).frame_size(384) == 384


def test_a_restart_after_frames_the_sampler_skipped_is_not_taken_for_a_lost_cache(services, tmp_path):
    """The last frames a worker consumed were skipped by its sampler (counted, never stored): a new worker
    finds the cache holding exactly what was stored, so it repairs nothing and counts no cache_lost fault."""
    cam = "cam-skip"
    n = ingest(services, cam, 3, 7, tmp_path)
    w = worker(services, cam)  # the default sampler: still frames are skipped
    drain(w)
    assert w.counters.skipped > 0 and w.counters.consumed == n
    w.stop()
    w2 = worker(services, cam)
    drain(w2)
    assert w2.counters.repaired == 0 and not w2.faults.get("cache_lost"), (w2.counters, dict(w2.faults))
    assert w2.counters.consumed == 0, "nothing read again is counted again"
    w2.stop()


def test_the_live_frame_is_the_newest_processed_frame_whole_and_readers_get_it_last(services, tmp_path):
    """Every reader is given the kept past, then the newest processed frame whole (streamdycoke.reading): the
    worker stores it, as the encoder saw it, after each batch, and encodes nothing more for it."""
    import torch

    from actors.frames import decode_frame
    from streamdycoke.reading import reading, whole
    from streamdycoke.segment import decode_segment

    cam = "cam-live"
    n = ingest(services, cam, 2, 7, tmp_path)
    w = worker(services, cam)
    assert w.store.live_raw(cam) is None
    drain(w)
    live = decode_segment(w.store.live_raw(cam))
    newest = w.store.last_frame_index(cam)  # the newest processed (stored) frame
    assert live.frame_index == newest and whole(live) and live.stream_id == cam
    records = {m.frame_index: m for m in (decode_frame(r.value) for r in consume_all(services[0].bootstrap, w.topic, n))}
    assert torch.equal(live.tokens, w.pipeline.encoder.encode(records[newest].rgb[None])[0].to(live.tokens.dtype))
    stored = w.store.read(cam)
    read = reading([decode_segment(b) for b in w.store.reader_window_raw(cam, window_s=600.0)])
    assert [s.frame_index for s in read] == [s.frame_index for s in stored]  # the newest stored one, read whole
    assert whole(read[-1]) and torch.equal(read[-1].tokens, live.tokens)
    assert len(stored) == w.counters.processed  # the live frame is not a stored frame
    w.stop()
