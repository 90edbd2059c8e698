"""Everything the pipeline needs, on this machine: one start-up shared by the demo, ``bench pipeline`` and the tests.

:class:`LocalStack` starts a Kafka-compatible broker (tansu) and a Valkey server from their pip wheels,
a local Ray (its own, never a cluster found on the machine) with a metrics export port, and Ray Serve's
HTTP proxy on 127.0.0.1, and stops them all, in reverse order, on leaving its ``with`` block.
"""

from __future__ import annotations

import contextlib
import secrets

from actors.config import KafkaSettings, RedisSettings
from .embedded import EmbeddedKafka, EmbeddedRedis, free_port

__all__ = ["LocalStack"]


class LocalStack:
    """A broker, a Redis, a local Ray and Serve, on 127.0.0.1.

    Args:
        num_cpus: CPUs Ray may schedule.
        camera_slots: camera actors this machine carries (Ray resource ``camera``); default: the measured
            ``CAMERA_SLOTS_PER_CPU`` per CPU.
        metrics_report_interval_ms: how often Ray exports metrics (1 s: tests see them soon).
        durable: the broker and Redis keep their data across a kill and restart (fault injection).
    """

    def __init__(self, num_cpus: int = 2, metrics_report_interval_ms: int = 1000, durable: bool = False,
                 camera_slots: int | None = None) -> None:
        from actors.ray_actor import CAMERA_SLOTS_PER_CPU

        self.num_cpus = num_cpus
        self.camera_slots = CAMERA_SLOTS_PER_CPU * num_cpus if camera_slots is None else camera_slots
        self.metrics_report_interval_ms = metrics_report_interval_ms
        self.kafka_server = EmbeddedKafka(durable=durable)
        self.redis_server = EmbeddedRedis(durable=durable)
        self.metrics_port = free_port()
        self.http_port = free_port()
        self.api_token = secrets.token_urlsafe(24)  # the bearer token of the app served on this stack
        self._stack: contextlib.ExitStack | None = None

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap=self.kafka_server.bootstrap)

    @property
    def redis(self) -> RedisSettings:
        return RedisSettings(url=self.redis_server.url)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> "LocalStack":
        import ray
        from ray import serve

        stack = contextlib.ExitStack()
        try:
            stack.enter_context(self.kafka_server)
            stack.enter_context(self.redis_server)
            from actors.ray_actor import CAMERA_RESOURCE

            ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                     resources={CAMERA_RESOURCE: self.camera_slots},
                     _metrics_export_port=self.metrics_port,
                     _system_config={"metrics_report_interval_ms": self.metrics_report_interval_ms})
            stack.callback(ray.shutdown)
            serve.start(http_options={"host": "127.0.0.1", "port": self.http_port})
            stack.callback(serve.shutdown)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def stop(self) -> None:
        if self._stack is not None:
            self._stack, stack = None, self._stack
            stack.close()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
