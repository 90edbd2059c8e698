"""The console's pure parts: the session cookie and CSRF rules of the guard, the kept-token view, snapshots."""

import io
import time

import numpy as np
import pytest
import torch
from pydantic import SecretStr

from actors.snapshots import SnapshotConfig, SnapshotTaker, jpeg_snapshot
from deployments import guard
from deployments.config import AppArgs
from deployments.console import kept_view
from streamdycoke.segment import TokenSegment, encode_segment

TOKEN = "console-token-8c1f"


@pytest.fixture
def token():
    guard.configure(AppArgs(api_token=SecretStr(TOKEN)))
    yield
    guard._settings.update(configured=False, token=None)


def headers(**h):
    return {k.replace("_", "-").encode(): v.encode() for k, v in h.items()}


def test_bearer_token_or_a_session_cookie_passes_and_nothing_else(token):
    scope = {"method": "GET"}
    assert guard._refusal(scope, headers(authorization=f"Bearer {TOKEN}")) is None
    assert guard._refusal(scope, headers(authorization="Bearer nope"))[0] == 401
    assert guard._refusal(scope, {})[0] == 401
    session, _ = guard.new_session()
    assert TOKEN not in session  # the cookie is not the token
    assert guard._refusal(scope, headers(cookie=f"sdk_session={session}")) is None
    # another application's cookies on this host (JSON, spaces) do not hide ours
    assert guard._refusal(scope, headers(cookie=f'prefs={{"a":1}}; x=a b; sdk_session={session}')) is None
    forged = session[:-4] + ("0000" if not session.endswith("0000") else "1111")
    assert guard._refusal(scope, headers(cookie=f"sdk_session={forged}"))[0] == 401
    expired, _ = guard.new_session(now=time.time() - guard.SESSION_S - 5)
    assert guard._refusal(scope, headers(cookie=f"sdk_session={expired}"))[0] == 401


def test_a_session_signed_with_another_token_is_refused(token):
    session, _ = guard.new_session()
    guard.configure(AppArgs(api_token=SecretStr("rotated-token")))
    assert guard._refusal({"method": "GET"}, headers(cookie=f"sdk_session={session}"))[0] == 401


def test_state_changing_requests_on_a_session_need_the_csrf_token_from_this_site(token):
    session, csrf = guard.new_session()
    post = {"method": "POST"}
    cookie = f"sdk_session={session}; sdk_csrf={csrf}"
    assert guard._refusal(post, headers(cookie=cookie))[0] == 403
    assert guard._refusal(post, headers(cookie=cookie, x_csrf_token="x" * 64))[0] == 403
    assert guard._refusal(post, headers(cookie=cookie, x_csrf_token=csrf, host="gw:8000")) is None
    assert guard._refusal(post, headers(cookie=cookie, x_csrf_token=csrf, host="gw:8000",
                                        origin="http://gw:8000")) is None
    assert guard._refusal(post, headers(cookie=cookie, x_csrf_token=csrf, host="gw:8000",
                                        origin="https://evil.example"))[0] == 403
    # a bearer-token client (no cookie) needs no CSRF token: a browser cannot be made to send the header
    assert guard._refusal(post, headers(authorization=f"Bearer {TOKEN}")) is None
    assert guard.check_token(TOKEN) and not guard.check_token(TOKEN + "x") and not guard.check_token("")


def seg(frame, positions, keyframe=False, grid=(2, 3)):
    pos = torch.tensor(positions, dtype=torch.long)
    return encode_segment(TokenSegment("c", frame, 10.0 + frame, pos, torch.zeros(len(pos), 4, dtype=torch.float16),
                                       keyframe, grid))


def test_kept_view_shows_the_frames_kept_positions_and_how_old_each_held_token_is():
    blobs = [seg(0, range(6), keyframe=True), seg(1, [1, 4]), seg(2, [4]), seg(3, [0, 5])]
    v = kept_view(blobs, frame=2)
    assert v["frame"] == 2 and v["grid"] == [2, 3] and v["kept"] == [4] and not v["keyframe"]
    assert v["age_frames"] == [2, 1, 2, 2, 0, 2] and v["age_s"] == [2.0, 1.0, 2.0, 2.0, 0.0, 2.0]
    assert [h[1:] for h in v["history"]] == [[6, 6], [2, 6], [1, 6], [2, 6]]
    newest = kept_view(blobs)
    assert newest["frame"] == 3 and newest["kept"] == [0, 5] and newest["age_frames"] == [0, 2, 3, 3, 1, 0]
    # a frame the cache has no segment for shows the newest one before it
    assert kept_view(blobs, frame=99)["frame"] == 3
    with pytest.raises(ValueError):
        kept_view(blobs[1:], frame=0)
    # before any keyframe in the window: positions never kept have no age
    assert kept_view(blobs[1:], frame=2)["age_frames"] == [None, 1, None, None, 0, None]


def test_snapshots_are_small_jpegs_about_once_a_second_of_capture_time():
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    jpeg = jpeg_snapshot(rgb, max_side=320)
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.size == (320, 240)
    assert Image.open(io.BytesIO(jpeg_snapshot(rgb[:100, :50], max_side=320))).size == (50, 100)  # never upscaled
    taker = SnapshotTaker(SnapshotConfig(every_s=1.0))
    taken = [ts for ts in np.arange(0, 3.01, 1 / 30) if taker.take(0, float(ts), rgb[:32, :32]) is not None]
    assert len(taken) == 4 and taken[0] == 0.0 and all(b - a >= 1.0 - 1e-9 for a, b in zip(taken, taken[1:]))

