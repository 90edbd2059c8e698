"""``streamdycoke bench transit``: the embedded broker alone, one producer at a camera's rate, one consumer,
for each consumer ``fetch_max_wait_ms``: Kafka transit (send to receive) p50/p99 and the producer's
acknowledgement time. It is how the camera consumers' default fetch wait was chosen."""

from __future__ import annotations

import sys
import threading
import time

from streamdycoke.stats import percentile

__all__ = ["bench_transit", "print_transit"]


def bench_transit(waits_ms: list[int] = (500, 100, 20, 10, 5), frames: int = 150, fps: float = 30.0,
                  message_bytes: int = 12_288, progress: bool = True) -> dict:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from actors.config import KafkaSettings
    from .embedded import EmbeddedKafka
    from actors.topics import ensure_topic

    out = {"frames": frames, "fps": fps, "message_bytes": message_bytes, "results": []}
    with EmbeddedKafka() as broker:
        kafka = KafkaSettings(bootstrap=broker.bootstrap)
        for wait in waits_ms:
            topic = f"transit-{wait}"
            ensure_topic(kafka, topic)
            tp = TopicPartition(topic, 0)
            consumer = KafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False, fetch_max_wait_ms=wait)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            producer = KafkaProducer(**kafka.client_kwargs(), acks="all", linger_ms=0)
            transit: list[float] = []
            acks: list[float] = []
            done = threading.Event()

            def produce() -> None:
                for _ in range(frames):
                    t = time.time()
                    producer.send(topic, value=bytes(message_bytes), partition=0).get(10)
                    acks.append(time.time() - t)
                    time.sleep(max(0.0, 1.0 / fps - (time.time() - t)))
                done.set()

            thread = threading.Thread(target=produce, daemon=True)
            thread.start()
            while len(transit) < frames and not (done.is_set() and len(transit) >= len(acks)):
                for rec in consumer.poll(timeout_ms=200).get(tp, []):
                    transit.append(time.time() - rec.timestamp / 1e3)
            thread.join()
            consumer.close()
            producer.close()
            r = {"fetch_max_wait_ms": wait, "transit_p50_ms": 1e3 * percentile(transit, 0.5),
                 "transit_p99_ms": 1e3 * percentile(transit, 0.99), "ack_p50_ms": 1e3 * percentile(acks, 0.5)}
            out["results"].append(r)
            if progress:
                print(f"fetch_max_wait_ms {wait}: transit p50 {r['transit_p50_ms']:.1f} ms", file=sys.stderr)
    return out


def print_transit(res: dict) -> None:
    print(f"embedded broker, one producer at {res['fps']:.0f} messages/s of {res['message_bytes']} bytes, one consumer:")
    print(f"  {'fetch_max_wait_ms':>17} {'transit p50 ms':>14} {'transit p99 ms':>14} {'ack p50 ms':>10}")
    for r in res["results"]:
        print(f"  {r['fetch_max_wait_ms']:>17} {r['transit_p50_ms']:>14.1f} {r['transit_p99_ms']:>14.1f} "
              f"{r['ack_p50_ms']:>10.1f}")
