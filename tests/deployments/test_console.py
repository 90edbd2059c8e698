"""The operator's console in a real browser (Debian's headless Chromium driven by Selenium) against the Serve
app on Ray with camera actors on a real broker and Redis: what the demo's browser test (``test_demo``) does
not show. A request changing state without the page's CSRF token refused; the inbox showing a record it can
only partly read; an alert's webhook (a real HTTP endpoint reached from the camera's Ray actor) getting
the alert the inbox shows, signed; acknowledging kept by the server; a wall of hundreds of cameras paged,
fetching only the snapshots on screen."""

import json
import shutil

import pytest

from actors.config import CameraConfig, IngestSettings
from actors.ingest import Ingestor
from streamdycoke.video import make_camera_video
from tools.screenshots import until

from ..conftest import needs_isolated_network, wait_for
from .conftest import TOKEN, served_app
from .test_app import http

pytestmark = [needs_isolated_network,
              pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                 reason="needs Debian's chromium and chromium-driver (make system-deps installs them)")]


DOCK = "console-dock"  # a name of its own: the test session's cache holds other modules' cameras and alerts


@pytest.fixture(scope="module")
def console(ray_cluster, tmp_path_factory):
    stack = ray_cluster
    with served_app(stack, "console") as sup:
        yield stack, sup, tmp_path_factory.mktemp("console")


def sign_in(d, base: str) -> None:
    from selenium.webdriver.common.by import By

    d.get(base + "/ui/login")
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.ID, "signin").click()
    until(d, "return location.pathname === '/ui/' && document.querySelector('#wall')")


@pytest.fixture(scope="module")
def browser():
    from tools.screenshots import chromium

    driver = chromium(1400, 1000)
    yield driver
    driver.quit()


def test_the_inbox_acknowledges_and_the_cameras_webhook_gets_the_same_signed_alert(console, browser):
    from selenium.webdriver.common.by import By

    from actors.token_cache import RedisTokenStore

    stack, sup, tmp = console
    base = f"http://127.0.0.1:{stack.http_port}"
    d = browser
    sign_in(d, base)
    # a request changing state without the page's CSRF token is refused
    status = d.execute_async_script("""const done = arguments[0];
        fetch('/v1/alerts/some-alert/ack', {method: 'POST'}).then(r => done(r.status));""")
    assert status == 403

    # -- the inbox: a camera's standing query raises an alert while it is open; it appears, with its snapshot,
    # within 2 s (beside a record of another producer with few fields, which the inbox shows as far as it can)
    RedisTokenStore(stack.redis).add_alert({"camera": "console-other", "query": "q", "state": "raised", "id": "sparse"})
    d.get(base + "/ui/#/alerts")
    until(d, "return document.querySelector('#feed-state').textContent === 'live'")
    # the camera's alerts also go to a webhook: a real HTTP endpoint here, reached from the camera's Ray actor
    from ..webhook_endpoint import SECRET, Endpoint

    hook = Endpoint()
    sup.add(CameraConfig(id=DOCK, webhooks=[{"url": hook.url + "/alerts", "secret": SECRET, "name": "ops"}], standing=[{
        "id": "anything", "prompt": "Is anything moving?", "every_s": 0.5, "window_s": 2.0,
        "rule": {"kind": "match", "pattern": r"<\d+>"}, "max_new_tokens": 2}]))  # the tiny LLM always matches
    Ingestor(DOCK, str(make_camera_video(tmp / "dock.mp4", seconds=4, seed=13)), stack.kafka,
             IngestSettings(size=64, realtime=True)).run()
    try:
        card = until(d, f"return document.querySelector('article.alert[data-camera=\"{DOCK}\"]')", timeout_s=90)
        assert d.find_elements(By.CSS_SELECTOR, 'article.alert[data-alert="sparse"]')
    except TimeoutError:  # say what the pipeline did, not only what the page lacks
        kept = [r for _, r in RedisTokenStore(stack.redis).read_alerts("0-0", count=10_000) if r and r["camera"] == DOCK]
        raise AssertionError(f"no {DOCK} alert in the inbox; stats {sup.stats().get(DOCK)}; in the cache: {kept[:2]}; "
                             f"feed: {d.find_element(By.ID, 'feed-state').text}; "
                             f"cards: {len(d.find_elements(By.CSS_SELECTOR, 'article.alert'))}") from None
    until(d, f"const i = document.querySelector('article.alert[data-camera=\"{DOCK}\"] img.evidence');"
             "return i && i.complete && i.naturalWidth > 0", timeout_s=10)
    card = d.find_element(By.CSS_SELECTOR, f'article.alert[data-camera="{DOCK}"]')  # the inbox may have redrawn it
    received, decided = float(card.get_attribute("data-received")), float(card.get_attribute("data-decided"))
    shown = float(card.find_element(By.CSS_SELECTOR, "img.evidence").get_attribute("data-shown"))
    assert received - decided <= 2.0, f"the alert reached the inbox {received - decided:.2f} s after it was raised"
    assert shown - decided <= 2.0, f"its snapshot was on screen {shown - decided:.2f} s after it was raised"
    # the webhook got the same alert, signed as Standard Webhooks says, with its evidence reference
    import standardwebhooks

    try:
        assert hook.delivered.wait(timeout=30), "the webhook got no alert"
        path, headers, body = hook.requests[0]
        standardwebhooks.Webhook(SECRET).verify(body, headers)
        sent = json.loads(body)
        assert path == "/alerts" and sent["id"] == card.get_attribute("data-alert") and sent["camera"] == DOCK
        assert sent["evidence"]["snapshot"]["url"].endswith(f"/alerts/{sent['id']}/snapshot")
    finally:
        hook.close()
    src = card.find_element(By.CSS_SELECTOR, "img.evidence").get_attribute("src")
    # acknowledged from the inbox: the server keeps it
    alert_id = card.get_attribute("data-alert")
    card.find_element(By.CSS_SELECTOR, "button.ack").click()
    wait_for(lambda: alert_id in http(stack.http_port, "GET", "/v1/alerts/acked")[1]["acked"], timeout_s=10)
    # the alert's evidence is a JPEG the API serves (bearer token) as the alert names it
    import urllib.request

    req = urllib.request.Request(src, headers={"authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["content-type"] == "image/jpeg" and r.read(3) == b"\xff\xd8\xff"


def test_a_wall_of_hundreds_of_cameras_pages_and_fetches_only_what_is_on_screen(console, browser):
    """Three hundred cameras in the cache (a frame and a snapshot each, written as a camera writes them):
    the wall draws one page of tiles, not three hundred; the pager counts every camera and walks the pages;
    only tiles on screen fetch their snapshot."""
    import numpy as np
    import torch
    from selenium.webdriver.common.by import By

    from actors.snapshots import jpeg_snapshot
    from actors.token_cache import RedisTokenStore
    from streamdycoke.segment import TokenSegment

    stack, _, _ = console
    store = RedisTokenStore(stack.redis)
    many = [f"console-many-{i:03d}" for i in range(300)]
    jpeg = jpeg_snapshot(np.full((48, 64, 3), 90, dtype=np.uint8))
    try:
        for cam in many:
            store.append(TokenSegment(stream_id=cam, frame_index=0, timestamp=1.0, positions=torch.arange(4),
                                      tokens=torch.zeros(4, 8, dtype=torch.float16), keyframe=True, grid=(2, 2)))
            store.put_snapshots(cam, [(0, 1.0, jpeg)])
        total = len(store.streams())
        d = browser
        base = f"http://127.0.0.1:{stack.http_port}"
        if d.get_cookie("sdk_session") is None:  # run alone: sign in first
            sign_in(d, base)
        d.get(base + "/ui/#/")
        pager = "const s = document.querySelector('.pager span'); return s && s.textContent"
        until(d, f"{pager}.includes('of {total}')")
        page = int(d.execute_script("return PAGE"))
        assert len(d.find_elements(By.CSS_SELECTOR, ".tile")) == page < total
        # only what is on screen fetches its snapshot (the window shows a few rows of the page)
        until(d, "return document.querySelectorAll('.tile img.snap[data-loaded=\"1\"]').length > 0")
        loaded = len(d.find_elements(By.CSS_SELECTOR, '.tile img.snap[data-loaded="1"]'))
        assert 0 < loaded < page, loaded
        first = [t.get_attribute("data-camera") for t in d.find_elements(By.CSS_SELECTOR, ".tile")]
        d.find_elements(By.CSS_SELECTOR, ".pager button")[1].click()  # the next page
        until(d, f"{pager}.includes('{page + 1}–')")
        second = [t.get_attribute("data-camera") for t in d.find_elements(By.CSS_SELECTOR, ".tile")]
        assert len(second) == page and not set(first) & set(second)
        assert second == store.streams()[page:2 * page]
        # the last page holds what is left
        last = (total - 1) // page * page
        d.get(base + f"/ui/#/?offset={last}")
        until(d, f"{pager}.includes('{last + 1}–{total} of {total}')")
        assert len(d.find_elements(By.CSS_SELECTOR, ".tile")) == total - last
    finally:  # the session's cache is shared with later modules: the cameras go
        keys = list(store.client.scan_iter(match=f"{stack.redis.key_prefix}:{{console-many-*", count=1000))
        for i in range(0, len(keys), 500):
            store.client.delete(*keys[i:i + 500])
