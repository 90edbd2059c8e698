"""Pictures of the running console for the docs: ``streamdycoke demo --screenshots DIR``.

Waits until every camera has a snapshot and an alert has been raised, then signs in with Debian's
headless Chromium (Selenium) and saves the camera wall, the first camera's page and the alert inbox.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from pathlib import Path

__all__ = ["chromium", "take", "take_when_ready", "until"]


def _get(api: str, path: str, token: str):
    req = urllib.request.Request(api + path, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def _ready(api: str, token: str, cameras: list[str]) -> bool:
    try:
        listed = json.loads(_get(api, "/v1/cameras", token))["cameras"]
        if not all(c in listed for c in cameras):
            return False
        for c in cameras:
            _get(api, f"/v1/cameras/{c}/snapshot", token)
        return _has_raised(api, token)
    except Exception:
        return False


def _has_raised(api: str, token: str) -> bool:
    """Whether the alert feed holds a raised alert (the first event of a replay from the start)."""
    req = urllib.request.Request(api + "/v1/alerts?since=0", headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            line = r.readline().decode()
            if line.startswith("data: ") and json.loads(line[6:]).get("state") == "raised":
                return True
    return False


def chromium(width: int = 1400, height: int = 900):
    """Debian's headless Chromium driven by Selenium (its chromedriver; nothing downloaded); quit it after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))


def until(driver, js: str, timeout_s: float = 30.0, every_s: float = 0.1):
    """Wait until the script ``js`` (a body returning a value) returns something truthy in ``driver``'s
    page; return it (``TimeoutError`` naming the script if it never does)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if got := driver.execute_script(js):
            return got
        time.sleep(every_s)
    raise TimeoutError(f"the page never satisfied: {js}")


def take(api: str, token: str, cameras: list[str], folder: str) -> list[str]:
    """Sign in and save ``console-wall.png``, ``console-camera.png``, ``console-alerts.png`` in ``folder``."""
    from selenium.webdriver.common.by import By

    d = chromium()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)

    try:
        d.get(api + "/ui/login")
        d.find_element(By.ID, "token").send_keys(token)
        d.find_element(By.ID, "signin").click()
        until(d, "return [...document.querySelectorAll('.tile img.snap')].length === %d && "
              "[...document.querySelectorAll('.tile img.snap')].every(i => i.naturalWidth > 0)" % len(cameras))
        d.save_screenshot(str(out / "console-wall.png"))
        d.get(f"{api}/ui/#/camera/{cameras[0]}")
        until(d, "const i = document.querySelector('#cam-snap'); return i && i.naturalWidth > 0 && "
              "document.querySelector('#chart polyline')")
        d.save_screenshot(str(out / "console-camera.png"))
        d.get(api + "/ui/#/alerts")
        until(d, "const i = [...document.querySelectorAll('img.evidence')]; return i.length && i.every(x => x.naturalWidth > 0)")
        d.save_screenshot(str(out / "console-alerts.png"))
    finally:
        d.quit()
    return [str(out / n) for n in ("console-wall.png", "console-camera.png", "console-alerts.png")]


def take_when_ready(api: str, token: str, cameras: list[str], folder: str, say=print,
                    timeout_s: float = 180.0) -> threading.Thread:
    """In a thread: wait for the console to have something to show, then :func:`take` (said, not raised)."""

    def run() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not _ready(api, token, cameras):
            time.sleep(1.0)
        try:
            say("screenshots: " + ", ".join(take(api, token, cameras, folder)))
        except Exception as exc:
            say(f"screenshots not taken: {type(exc).__name__}: {exc}")

    t = threading.Thread(target=run, name="screenshots", daemon=True)
    t.start()
    return t
