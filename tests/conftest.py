import socket
import time

import numpy as np
import pytest
import torch

# Tests that start Ray run only in a loopback-only network namespace (`make test` enters one).
ISOLATED = [name for _, name in socket.if_nameindex()] == ["lo"]
needs_isolated_network = pytest.mark.skipif(
    not ISOLATED, reason="starts Ray: run inside a loopback-only namespace, e.g. `make test` "
                         "(unshare -n sh -c 'ip link set lo up && exec pytest ...')")


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
    session: the same :class:`~deployments.stack.LocalStack` the demo and ``bench pipeline`` use."""
    from deployments.stack import LocalStack

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
