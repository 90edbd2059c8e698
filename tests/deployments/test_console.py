"""The operator's console in a real browser (Debian's headless Chromium driven by Selenium) against a running
pipeline: camera actors on a real broker and Redis, the Serve app on Ray.

Sign-in (a wrong token refused, the session cookie HttpOnly and SameSite=Strict, never the token), every
camera's tile showing its snapshot, the kept-token overlay matching the segment the cache holds for the
frame it shows, an alert raised by a scripted scene in the inbox with its evidence snapshot within 2 s of
being raised, a question answered as a stream with its visual tokens against uncompressed."""

import json
import os
import shutil
import time

import pytest

from actors.config import CameraConfig, IngestSettings
from actors.ingest import Ingestor
from streamdycoke.video import make_camera_video

from ..conftest import needs_isolated_network, wait_for
from .conftest import TOKEN, served_app
from .test_app import http

pytestmark = [needs_isolated_network,
              pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                 reason="needs Debian's chromium and chromium-driver (make system-deps installs them)")]


# names of their own: the test session's cache also holds the cameras (and alerts) of other modules' tests
GATE, YARD, DOCK = "console-gate", "console-yard", "console-dock"


@pytest.fixture(scope="module")
def console(ray_cluster, tmp_path_factory):
    stack = ray_cluster
    with served_app(stack, "console") as sup:
        tmp = tmp_path_factory.mktemp("console")
        for cam, seed in ((GATE, 11), (YARD, 12)):
            sup.add(CameraConfig(id=cam))
            Ingestor(cam, str(make_camera_video(tmp / f"{cam}.mp4", seconds=3, seed=seed)), stack.kafka,
                     IngestSettings(size=64)).run()
        wait_for(lambda: all((sup.stats()[c].get("processed") or 0) > 0 for c in (GATE, YARD)), timeout_s=120)
        yield stack, sup, tmp


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


def shot(driver, name):
    """Screenshots for the docs when STREAMDYCOKE_SCREENSHOTS names a folder."""
    folder = os.environ.get("STREAMDYCOKE_SCREENSHOTS")
    if folder:
        driver.save_screenshot(os.path.join(folder, name))


def until(driver, js, timeout_s=30.0):
    """Wait until the script ``js`` (a body returning a value) returns something truthy; return it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = driver.execute_script(js)
        if got:
            return got
        time.sleep(0.1)
    raise TimeoutError(f"the page never satisfied: {js}")


def test_the_console_in_a_real_browser(console, browser):
    from selenium.webdriver.common.by import By

    from actors.token_cache import RedisTokenStore

    stack, sup, tmp = console
    base = f"http://127.0.0.1:{stack.http_port}"
    d = browser

    # -- sign in: not signed in, a console page sends the browser to the login form; a wrong token is refused
    d.get(base + "/ui/")
    assert d.current_url == base + "/ui/login"
    d.find_element(By.ID, "token").send_keys("not-the-token")
    d.find_element(By.ID, "signin").click()  # returns before the form's navigation ends: wait for it
    until(d, "return location.search === '?failed=1' && document.readyState === 'complete'")
    assert "not the API token" in d.page_source and not d.get_cookies()
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.ID, "signin").click()
    until(d, "return location.pathname === '/ui/' && document.querySelector('#wall')")
    cookies = {c["name"]: c for c in d.get_cookies()}
    session = cookies["sdk_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and TOKEN not in session["value"]
    assert TOKEN not in d.current_url
    # a request changing state without the page's CSRF token is refused, with it accepted
    status = d.execute_async_script("""const done = arguments[0];
        fetch('/v1/alerts/some-alert/ack', {method: 'POST'}).then(r => done(r.status));""")
    assert status == 403

    # -- the wall: a tile per camera, each showing its latest snapshot (other tests' cameras may be there too)
    until(d, """return ['%s', '%s'].every(c => { const t = document.querySelector(`.tile[data-camera="${c}"]`);
        const i = t && t.querySelector('img.snap'); return i && i.dataset.loaded === '1' && i.naturalWidth > 0; });"""
          % (GATE, YARD))
    tiles = {t.get_attribute("data-camera") for t in d.find_elements(By.CSS_SELECTOR, ".tile")}
    assert {GATE, YARD} <= tiles and tiles <= set(RedisTokenStore(stack.redis).streams()) | {GATE, YARD}
    shot(d, "console-wall.png")

    # -- a camera's page: the overlay shows the positions the cache's segment of that frame kept
    d.get(base + f"/ui/#/camera/{GATE}")
    frame = int(until(d, "const o = document.querySelector('#overlay'); return o && o.children.length && o.dataset.frame"))
    kept = sorted(int(c.get_attribute("data-pos")) for c in d.find_elements(By.CSS_SELECTOR, "#overlay .cell.kept"))
    cells = len(d.find_elements(By.CSS_SELECTOR, "#overlay .cell"))
    [seg] = [s for s in RedisTokenStore(stack.redis).read(GATE) if s.frame_index == frame]
    assert kept == seg.positions.tolist() and cells == seg.num_positions
    assert until(d, "const i = document.querySelector('#cam-snap'); return i.naturalWidth > 0")
    assert d.find_element(By.CSS_SELECTOR, "#chart svg polyline").get_attribute("points")
    # the token counts: cumulative tokens in and kept, the kept line never above the one of every token in
    lines = {p.get_attribute("class"): p.get_attribute("points") for p in
             d.find_elements(By.CSS_SELECTOR, "#chart svg.tokens polyline")}
    ys = {k: [float(pt.split(",")[1]) for pt in v.split()] for k, v in lines.items()}
    assert set(ys) == {"series", "series-in"} and all(k >= i for k, i in zip(ys["series"], ys["series-in"]))

    # -- ask: the answer streams in, with the visual tokens it read against uncompressed
    d.find_element(By.ID, "question").send_keys("What is happening at the gate?")
    d.find_element(By.ID, "ask").click()
    until(d, "return document.querySelector('#answer').dataset.done", timeout_s=60)
    assert d.find_element(By.ID, "answer").get_attribute("data-done") == "1", d.find_element(By.ID, "answer").text
    assert d.find_element(By.ID, "answer").text.strip()
    usage = d.find_element(By.ID, "usage")
    assert 0 < int(usage.get_attribute("data-visual")) < int(usage.get_attribute("data-uncompressed"))
    shot(d, "console-camera.png")

    # -- the inbox: a scripted scene raises an alert while it is open; it appears, with its snapshot, within 2 s
    # (beside a record of another producer with few fields, which the inbox shows as far as it can read it)
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
    shot(d, "console-alerts.png")
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
            d.get(base + "/ui/login")
            d.find_element(By.ID, "token").send_keys(TOKEN)
            d.find_element(By.ID, "signin").click()
            until(d, "return location.pathname === '/ui/' && document.querySelector('#wall')")
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
