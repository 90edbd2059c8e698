"""`streamdycoke demo` end to end, in its own process (its own broker, Redis, Ray and Serve), with its console
driven in a real browser (Debian's headless Chromium, Selenium) while it runs."""

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from ..conftest import needs_isolated_network

pytestmark = needs_isolated_network


class DemoProcess:
    """``streamdycoke demo`` as a child process; its stderr read as it comes, for the addresses it prints."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "RAY_ADDRESS": ""}  # its own local Ray, not the test session's
        self.proc = subprocess.Popen([sys.executable, "-m", "streamdycoke.cli", "demo", *args], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.said: list[str] = []
        self._err = threading.Thread(target=self._read, daemon=True)
        self._err.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.said.append(line)
            self.lines.put(line)

    def wait_for_line(self, pattern: str, timeout_s: float) -> re.Match:
        """The first line matching ``pattern`` the demo says (within ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"the demo never said /{pattern}/; it said:\n{''.join(self.said)[-3000:]}")

    def result(self, timeout_s: float) -> dict:
        """Its JSON result (the last line it prints) once it has stopped by itself."""
        out, _ = self.proc.communicate(timeout=timeout_s)
        self._err.join(timeout=10)
        assert self.proc.returncode == 0, "".join(self.said)[-3000:]
        return json.loads(out.strip().splitlines()[-1])


def check_alerts_against_scenes(result: dict) -> None:
    """Each scripted camera raised its alert after its object entered and cleared it after it left, each
    within 4 s of scene time (two rounds of 1 s, the answer's lag, latency); the LLM's camera was asked."""
    from tools.demo import STREET

    assert set(result["cameras"]) == {"cam0", "cam1", STREET}
    for cam, c in result["cameras"].items():
        assert c["frames_ingested"] > 0
        assert c["frames_ingested"] == c["frames_processed"] + c["frames_skipped"] + c["frames_dead_lettered"], cam
        assert 0 < c["tokens_kept"] < c["tokens_in"]
        if cam == STREET:  # the LLM reads its tokens: the demo's question got an answer, from fewer tokens
            q = c["query"]
            assert q["answer"] and "error" not in q and 0 < q["visual_tokens"] < q["visual_tokens_uncompressed"], q
            continue
        assert "efficientnet-lite0" in c["query"]["skipped"], "the LLM is not asked about tokens it cannot read"
        sc = c["scene"]
        enter, leave = sc["in_view_s"]
        seen = []
        for a in c["alerts"]:
            scene_time = (a["window_end_ts"] - sc["start_ts"]) % sc["loop_s"]  # of the newest frame it read
            seen.append((a["state"], round(scene_time, 1)))
            assert a["answer"] == ("yes" if a["state"] == "raised" else "no") and a["latency_s"] < 2.0, a
        states = [s for s, _ in seen]
        assert states[:2] == ["raised", "cleared"] and states.count("raised") <= 2, (cam, seen)
        assert enter <= seen[0][1] <= enter + 4.0 and leave <= seen[1][1] <= leave + 4.0, (cam, sc, seen)


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver (make system-deps installs them)")
def test_the_running_demo_in_a_real_browser_and_its_alerts_true_to_the_scripted_scenes():
    """The demo with its scripted scenes and the LLM's street camera, its console used while it runs: a wrong
    token refused and the right one signed in (an HttpOnly, SameSite=Strict session that is not the token);
    an alert a scripted scene raises while the inbox is open appears there with its evidence snapshot
    within 2 s of being decided; every camera's tile shows its picture; the overlay's kept cells are the
    positions of the cached segment of the frame shown; a question gets a streamed answer from fewer visual
    tokens than uncompressed. Then, stopped by itself, the demo accounts for every frame and its alerts are
    true to the scenes."""
    from selenium.webdriver.common.by import By

    from actors.config import RedisSettings
    from actors.token_cache import RedisTokenStore
    from tools.demo import STREET
    from tools.screenshots import chromium, until

    demo = DemoProcess("--cameras", "2", "--duration", "30", "--json")
    d = None
    try:
        d = chromium(1400, 1000)  # starts while the demo does
        token = demo.wait_for_line(r"Bearer <token>'\): (\S+)", timeout_s=120)[1]
        base = demo.wait_for_line(r"console\s+(http://\S+)/ui/", timeout_s=300)[1]
        store = RedisTokenStore(RedisSettings(url=demo.wait_for_line(r"cache\s+(redis://\S+)", timeout_s=10)[1]))

        # -- sign in: a console page sends the browser to the login form; a wrong token is refused
        d.get(base + "/ui/")
        assert d.current_url == base + "/ui/login"
        d.find_element(By.ID, "token").send_keys("not-the-token")
        d.find_element(By.ID, "signin").click()
        until(d, "return location.search === '?failed=1' && document.readyState === 'complete'")
        assert "not the API token" in d.page_source and not d.get_cookies()
        d.find_element(By.ID, "token").send_keys(token)
        d.find_element(By.ID, "signin").click()
        until(d, "return location.pathname === '/ui/' && document.querySelector('#wall')")
        session = {c["name"]: c for c in d.get_cookies()}["sdk_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict" and token not in session["value"]
        assert token not in d.current_url

        # -- the inbox, open before a scripted scene's object enters: its alert appears with its snapshot
        d.get(base + "/ui/#/alerts")
        until(d, "return document.querySelector('#feed-state').textContent === 'live'")
        live = time.time()  # alerts decided from now are ones the open inbox receives as they happen
        card = until(d, """return [...document.querySelectorAll('article.alert.raised')].find(a =>
            parseFloat(a.dataset.decided) > %f && a.querySelector('img.evidence[data-shown]'))""" % live, timeout_s=25)
        received, decided = float(card.get_attribute("data-received")), float(card.get_attribute("data-decided"))
        shown = float(card.find_element(By.CSS_SELECTOR, "img.evidence").get_attribute("data-shown"))
        assert card.get_attribute("data-camera") in ("cam0", "cam1")
        assert received - decided <= 2.0, f"the alert reached the inbox {received - decided:.2f} s after it was raised"
        assert shown - decided <= 2.0, f"its snapshot was on screen {shown - decided:.2f} s after it was raised"

        # -- the wall: every camera's tile shows its latest snapshot
        d.get(base + "/ui/#/")
        cams = ["cam0", "cam1", STREET]
        until(d, """return %s.every(c => { const t = document.querySelector(`.tile[data-camera="${c}"]`);
            const i = t && t.querySelector('img.snap'); return i && i.dataset.loaded === '1' && i.naturalWidth > 0; });"""
              % json.dumps(cams))
        assert {t.get_attribute("data-camera") for t in d.find_elements(By.CSS_SELECTOR, ".tile")} == set(cams)

        # -- the street camera's page: the overlay is what the cache's segment of the frame shown kept
        d.get(base + f"/ui/#/camera/{STREET}")
        frame = int(until(d, "const o = document.querySelector('#overlay'); return o && o.children.length && o.dataset.frame"))
        kept = sorted(int(c.get_attribute("data-pos")) for c in d.find_elements(By.CSS_SELECTOR, "#overlay .cell.kept"))
        [seg] = [s for s in store.read(STREET) if s.frame_index == frame]
        assert kept == seg.positions.tolist()
        assert len(d.find_elements(By.CSS_SELECTOR, "#overlay .cell")) == seg.num_positions

        # -- ask: the answer streams in, with the visual tokens it read against uncompressed
        d.find_element(By.ID, "question").send_keys("What is moving in the street?")
        d.find_element(By.ID, "ask").click()
        until(d, "return document.querySelector('#answer').dataset.done", timeout_s=30)
        answer = d.find_element(By.ID, "answer")
        assert answer.get_attribute("data-done") == "1" and answer.text.strip(), answer.text
        usage = d.find_element(By.ID, "usage")
        assert 0 < int(usage.get_attribute("data-visual")) < int(usage.get_attribute("data-uncompressed"))
    except BaseException:
        demo.proc.kill()
        raise
    finally:
        if d is not None:
            d.quit()
    check_alerts_against_scenes(demo.result(timeout_s=300))
