"""Ingest against a real Kafka-compatible broker (tansu), started by the test."""

import pytest

from actors.embedded import EmbeddedKafka
from actors.frames import decode_frame
from actors.ingest import IngestSettings, Ingestor
from streamdycoke.video import make_camera_video


@pytest.fixture(scope="module")
def kafka():
    with EmbeddedKafka() as k:
        yield k


def consume_all(bootstrap, topic, expected, timeout_s=20.0):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
                      fetch_max_bytes=16 << 20)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    out = []
    import time

    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        for records in c.poll(timeout_ms=500).values():
            out.extend(records)
    c.close()
    return out


def test_ingest_publishes_every_frame_in_order_resized(kafka, tmp_path):
    video = make_camera_video(tmp_path / "cam.mp4", seconds=1, seed=2)
    ing = Ingestor("cam-a", str(video), IngestSettings(bootstrap=kafka.bootstrap, size=64))
    stats = ing.run()
    assert stats.frames == 30
    records = consume_all(kafka.bootstrap, ing.topic, 30)
    msgs = [decode_frame(r.value) for r in records]
    assert [m.frame_index for m in msgs] == list(range(30))
    assert all(m.camera == "cam-a" and m.rgb.shape == (64, 64, 3) for m in msgs)
    assert all(b.timestamp > a.timestamp for a, b in zip(msgs, msgs[1:]))


def test_looping_file_keeps_indices_and_timestamps_growing(kafka, tmp_path):
    video = make_camera_video(tmp_path / "cam.mp4", seconds=0.5, seed=3)
    ing = Ingestor("cam-loop", str(video), IngestSettings(bootstrap=kafka.bootstrap, size=32, loop=True, max_frames=40))
    assert ing.run().frames == 40
    msgs = [decode_frame(r.value) for r in consume_all(kafka.bootstrap, ing.topic, 40)]
    assert [m.frame_index for m in msgs] == list(range(40))
    assert all(b.timestamp > a.timestamp for a, b in zip(msgs, msgs[1:]))


def test_unreachable_source_is_retried_with_backoff_then_reported(kafka, tmp_path):
    ing = Ingestor("cam-x", str(tmp_path / "missing.mp4"),
                   IngestSettings(bootstrap=kafka.bootstrap, size=32, reconnect_backoff_s=0.01, max_reconnects=3))
    with pytest.raises(Exception):
        ing.run()
    assert ing.stats.reconnects == 3


def test_ingest_command_reports_what_it_published(kafka, tmp_path, capsys):
    import json

    from streamdycoke.cli import main

    video = make_camera_video(tmp_path / "cam.mp4", seconds=0.5, seed=4)
    assert main(["ingest", str(video), "--camera", "cli", "--bootstrap", kafka.bootstrap, "--size", "32"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r == {"camera": "cli", "frames": 15, "corrupt_packets": 0, "reconnects": 0}
    assert len(consume_all(kafka.bootstrap, "frames.cli", 15)) == 15
