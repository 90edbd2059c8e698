"""Everything the pipeline needs, on this machine: one start-up shared by the demo, ``bench pipeline`` and the tests.

:class:`LocalStack` starts a Kafka-compatible broker (tansu) and a Valkey server from their pip wheels,
a local Ray (its own, never a cluster found on the machine) with a metrics export port, and Ray Serve's
HTTP proxy on 127.0.0.1, and stops them all, in reverse order, on leaving its ``with`` block.

With ``camera_nodes`` the local Ray is a cluster of several nodes on this machine (the head from Ray's own
``ray.cluster_utils.Cluster``, each worker a ``ray start`` process of its own), labelled as a deployment
labels them: a head that carries Serve and no
camera slot, ``camera_nodes`` CPU workers (label ``role=cameras``) that carry only camera slots, and,
with ``accelerator_node``, one node with the custom resource ``accelerator`` (label ``role=accelerator``)
standing in for the GPU group, where deployments asking for that resource land. A worker node can be
killed (:meth:`LocalStack.kill_node`: its raylet and workers SIGKILLed, as Ray sees a lost machine) and
another added (:meth:`LocalStack.add_camera_node`).
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
        camera_nodes: 0: one Ray node carrying everything; N: a head (``num_cpus``, no camera slot) and N
            camera worker nodes with ``camera_slots`` slots each and no CPU to schedule (so Serve's
            replicas stay off them, and a lost camera node takes only cameras).
        accelerator_node: with ``camera_nodes``, add a node with one ``accelerator`` resource and one CPU.
        dashboard: run Ray's dashboard (its state API names the node of every actor and replica:
            ``GET /v1/fleet`` shows them); on by default with ``camera_nodes``.
        object_store_mib: each node's object store. Ray's default is 30% of the machine's memory per node,
            so a few nodes on one machine would promise more shared memory than it has; tokens travel
            through Redis, and frames and answers through the object store are kilobytes.
    """

    def __init__(self, num_cpus: int = 2, metrics_report_interval_ms: int = 1000, durable: bool = False,
                 camera_slots: int | None = None, camera_nodes: int = 0, accelerator_node: bool = False,
                 dashboard: bool | None = None, object_store_mib: int = 256) -> None:
        from actors.placement import CAMERA_SLOTS_PER_CPU

        self.num_cpus = num_cpus
        self.camera_slots = CAMERA_SLOTS_PER_CPU * num_cpus if camera_slots is None else camera_slots
        self.metrics_report_interval_ms = metrics_report_interval_ms
        self.kafka_server = EmbeddedKafka(durable=durable)
        self.redis_server = EmbeddedRedis(durable=durable)
        self.metrics_port = free_port()
        self.http_port = free_port()
        self.api_token = secrets.token_urlsafe(24)  # the bearer token of the app served on this stack
        self.camera_nodes, self.accelerator_node = camera_nodes, accelerator_node
        self.dashboard = bool(camera_nodes) if dashboard is None else dashboard
        self.object_store_bytes = object_store_mib * 1024 * 1024
        self.cluster = None  # ray.cluster_utils.Cluster, with camera_nodes
        self.workers: dict[str, tuple] = {}  # node id -> (its `ray start` process, its temporary directory)
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
            from actors.placement import CAMERA_RESOURCE

            system = {"metrics_report_interval_ms": self.metrics_report_interval_ms}
            if self.camera_nodes:
                self._start_cluster(stack, system)
            else:
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=self.dashboard,
                         log_to_driver=False, resources={CAMERA_RESOURCE: self.camera_slots},
                         object_store_memory=self.object_store_bytes,
                         _metrics_export_port=self.metrics_port, _system_config=system)
                stack.callback(ray.shutdown)
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": self.http_port})
            stack.callback(serve.shutdown)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def _start_cluster(self, stack: contextlib.ExitStack, system: dict) -> None:
        import ray
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": self.num_cpus, "include_dashboard": self.dashboard, "labels": {"role": "head"},
            "metrics_export_port": self.metrics_port, "_system_config": system,
            "object_store_memory": self.object_store_bytes})
        stack.callback(self.cluster.shutdown)
        ray.init(address=self.cluster.address, log_to_driver=False)
        stack.callback(ray.shutdown)
        stack.callback(self._stop_workers)  # before Ray's shutdown and the head's
        for _ in range(self.camera_nodes):
            self.add_camera_node()
        if self.accelerator_node:
            self._add_worker(num_cpus=1, resources={"accelerator": 1}, role="accelerator")

    def add_camera_node(self) -> str:
        """Start one more camera worker node (``camera_slots`` slots, no CPU to schedule); its node id."""
        from actors.placement import CAMERA_RESOURCE

        if self.cluster is None:
            raise RuntimeError("a single-node stack has no worker nodes (LocalStack(camera_nodes=N))")
        return self._add_worker(num_cpus=0, resources={CAMERA_RESOURCE: self.camera_slots}, role="cameras")

    def _add_worker(self, num_cpus: int, resources: dict, role: str, timeout_s: float = 120.0) -> str:
        """A worker node as its own ``ray start`` process (as on a machine of its own: its own temporary
        directory), joined to the head; its node id once Ray lists it alive.

        Not ``Cluster.add_node``: that forks the raylet from this process with a Python ``preexec_fn``, and
        a node added while the stack runs (the soak's returning node) forks beside the ingest and Kafka
        threads; the child can block on a lock one of them held at the fork (seen: the soak hung there)."""
        import json
        import os
        import subprocess
        import sys
        import tempfile
        import time

        import ray

        known = {n["NodeID"] for n in ray.nodes()}
        temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: the node's socket paths must fit AF_UNIX
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        proc = subprocess.Popen(
            [ray_bin, "start", "--block", "--disable-usage-stats", f"--address={self.cluster.address}",
             f"--temp-dir={temp}", f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}",
             f"--labels=role={role}", f"--object-store-memory={self.object_store_bytes}",
             f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            new = [n["NodeID"] for n in ray.nodes() if n["NodeID"] not in known and n.get("Alive")]
            if new:
                self.workers[new[0]] = (proc, temp)
                return new[0]
            if proc.poll() is not None:
                raise RuntimeError(f"the {role} node's ray start exited ({proc.returncode}); logs under {temp}")
            time.sleep(0.2)
        self._kill(proc)
        raise TimeoutError(f"the {role} node did not join within {timeout_s:.0f} s; logs under {temp}")

    @staticmethod
    def _kill(proc) -> None:
        """SIGKILL a ``ray start`` process and every process under it (its raylet, the raylet's workers)."""
        import psutil

        try:
            root = psutil.Process(proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait(30)

    def kill_node(self, node_id: str) -> None:
        """Lose a worker node: its raylet and every process on it SIGKILLed at once, no graceful drain."""
        if node_id not in self.workers:
            raise ValueError(f"{node_id} is not a worker node of this stack (the head cannot be killed)")
        import shutil

        proc, temp = self.workers.pop(node_id)
        self._kill(proc)
        shutil.rmtree(temp, ignore_errors=True)

    def _stop_workers(self) -> None:
        for node_id in list(self.workers):
            self.kill_node(node_id)

    def stop(self) -> None:
        if self._stack is not None:
            self._stack, stack = None, self._stack
            stack.close()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
