"""Shared test helpers, and the test lanes.

Lanes (markers, registered in ``pyproject.toml``):

- ``unit``: every test not marked otherwise. No process or service is started (a unit test that starts
  one fails, saying so) and the lane runs in under a minute: ``pytest -m unit`` on every change.
- ``integration``: starts real services (Kafka broker, Redis, Ray, Prometheus, a browser, ffmpeg) or
  other processes; mark a module with ``pytestmark = pytest.mark.integration``.
- ``slow``: no service, but seconds to minutes of compute (training, end-to-end evals, benchmarks).
- ``cluster``: integration tests that start a Ray cluster of several nodes of their own (``needs_ray_cluster``).
  ``make test`` runs this lane on its own, after the unit and slow lanes and before the integration lane
  and its session Ray.

``make test`` and CI run every lane.
"""

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

import numpy as np
import pytest
import torch

# Under pytest-xdist each worker's tests start their own local Rays (the session's, the demo's): each worker
# gets a temporary directory of its own for them (Ray's sockets are named inside it; two Rays starting at
# once in one directory race for the names), which the processes the tests start inherit.
if os.environ.get("PYTEST_XDIST_WORKER"):
    # (under the user's RAY_TMPDIR when set; short, for the socket paths inside; removed when the worker exits)
    _RAY_TMP = tempfile.mkdtemp(prefix=f"sdk-{os.environ['PYTEST_XDIST_WORKER']}-",
                                dir=os.environ.get("RAY_TMPDIR", "/tmp"))
    os.environ["RAY_TMPDIR"] = _RAY_TMP
    atexit.register(shutil.rmtree, _RAY_TMP, ignore_errors=True)

# Tests that start Ray run only in a loopback-only network namespace (`make test` enters one).
ISOLATED = [name for _, name in socket.if_nameindex()] == ["lo"]
# A test marked so starts Ray: it is an integration test, skipped outside a loopback-only namespace.
needs_isolated_network = pytest.mark.ray
# A test marked so starts a Ray cluster of several nodes: it runs in the cluster lane, alone on the machine.
needs_ray_cluster = pytest.mark.cluster
_NOT_ISOLATED = pytest.mark.skip(reason="starts Ray: run inside a loopback-only namespace, e.g. `make test` "
                                        "(unshare -n sh -c 'ip link set lo up && exec pytest ...')")
# fixtures that start a real service (an embedded broker or Redis, or the whole local stack)
SERVICE_FIXTURES = {"kafka", "services", "valkey", "server", "ray_cluster"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.ray)
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.integration)
            if not ISOLATED:
                item.add_marker(_NOT_ISOLATED)
        if SERVICE_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)
        if not any(item.get_closest_marker(m) for m in ("integration", "slow")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request, monkeypatch):
    """A unit test may not start a process (a service, a browser, another Python): it fails, saying so."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(self, args, *a, **k):
        raise RuntimeError(f"a unit test started a process ({args!r}): mark it integration (or slow)")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    try:
        from tools import embedded
    except ImportError:  # the core alone
        return

    def refuse_service(self, *a, **k):
        raise RuntimeError(f"a unit test started {type(self).__name__}: mark it integration")

    for cls in (embedded.EmbeddedKafka, embedded.EmbeddedRedis):
        monkeypatch.setattr(cls, "start", refuse_service)


def wait_for(pred, timeout_s=60.0, every=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if every:
            every()
        if pred():
            return
        time.sleep(0.3)
    raise TimeoutError("condition not reached")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real broker, a real Redis, a real local Ray (with its metrics port) and Serve, for the whole
    session: the same :class:`~tools.stack.LocalStack` the demo and ``bench pipeline`` use."""
    from tools.stack import LocalStack

    with LocalStack() as stack:
        yield stack


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def drifting_stream(T: int, N: int, D: int, seed: int = 0, moving: float = 0.2) -> torch.Tensor:
    """``(T, N, D)`` tokens: a still scene where a fraction ``moving`` of positions changes each frame."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(N, D, generator=g)
    frames = []
    cur = base.clone()
    for _ in range(T):
        mask = torch.rand(N, generator=g) < moving
        cur = cur.clone()
        cur[mask] = cur[mask] + 0.8 * torch.randn(int(mask.sum()), D, generator=g)
        frames.append(cur + 0.01 * torch.randn(N, D, generator=g))
    return torch.stack(frames)


@pytest.fixture
def stream_tokens():
    return drifting_stream(40, 36, 16)


def rgb(h: int = 64, w: int = 64, value: int | None = None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if value is not None:
        return np.full((h, w, 3), value, dtype=np.uint8)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
