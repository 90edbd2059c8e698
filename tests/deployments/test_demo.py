"""`streamdycoke demo` end to end, in its own process (its own broker, Redis, Ray and Serve), with its console
driven in a real browser (Debian's headless Chromium, Selenium) while it runs."""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from streamdycoke import EncoderSpec
from tools.demo import llm_has_weights

from ..conftest import needs_isolated_network

pytestmark = needs_isolated_network


class DemoProcess:
    """``streamdycoke demo`` as a child process; its stderr read as it comes, for the addresses and the alert
    lines it prints. Stopped as an operator stops it, with Ctrl-C (SIGINT): it drains and prints its result."""

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
        """The first line from now on matching ``pattern`` that the demo says (within ``timeout_s``)."""
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

    def stop(self, timeout_s: float) -> dict:
        """Ctrl-C, then its JSON result (the last line it prints) once it has drained and stopped."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=timeout_s)
        self._err.join(timeout=10)
        out = self.proc.stdout.read()
        assert self.proc.returncode == 0, "".join(self.said)[-3000:]
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        """On a failure: Ctrl-C (its embedded broker and Valkey stop with it), and SIGKILL if that hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def check_result(result: dict) -> None:
    """Every frame accounted for; each scripted camera's alerts true to its scene (a raise within 4 s of
    scene time after its object entered, a clear within 4 s after it left: two rounds of 1 s, the answer's
    lag, latency), at least one of each; the LLM's camera answered the demo's question from fewer tokens."""
    from tools.demo import STREET, judge_alerts

    assert set(result["cameras"]) == {"cam0", "cam1", STREET}
    for cam, c in result["cameras"].items():
        assert c["frames_ingested"] > 0
        assert c["frames_ingested"] == c["frames_processed"] + c["frames_skipped"] + c["frames_dead_lettered"], cam
        assert 0 < c["tokens_kept"] < c["tokens_in"]
        if cam == STREET:
            q = c["query"]
            assert q["answer"] and "error" not in q and 0 < q["visual_tokens"] < q["visual_tokens_uncompressed"], q
            continue
        assert "efficientnet-lite0" in c["query"]["skipped"], "the LLM is not asked about tokens it cannot read"
        states = [a["state"] for a in c["alerts"]]
        assert states[:2] == ["raised", "cleared"], (cam, states)
        assert all(a["answer"] == ("yes" if a["state"] == "raised" else "no") and a["latency_s"] < 2.0
                   for a in c["alerts"]), c["alerts"]
        assert all(judge_alerts(c)), (cam, c["scene"], [(a["state"], a["window_end_ts"]) for a in c["alerts"]])


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver (make system-deps installs them)")
@pytest.mark.skipif(llm_has_weights(EncoderSpec()), reason="the offline demo's test: LLM weights are cached here")
def test_the_running_demo_in_a_real_browser_and_its_alerts_true_to_the_scripted_scenes():
    """The demo with its scripted scenes and the LLM's street camera, its console used while it runs: a wrong
    token refused and the right one signed in (an HttpOnly, SameSite=Strict session that is not the token);
    an alert a scripted scene raises while the inbox is open appears there with its evidence snapshot
    within 2 s of being decided; every camera's tile shows its picture; the overlay's kept cells are the
    positions of the cached segment of the frame shown; a question gets a streamed answer from fewer visual
    tokens than uncompressed. Then, once each scripted object has come and gone, stopped with Ctrl-C: the
    demo accounts for every frame and its alerts are true to the scenes."""
    from selenium.webdriver.common.by import By

    from actors.config import RedisSettings
    from actors.token_cache import RedisTokenStore
    from tools.demo import STREET
    from tools.screenshots import chromium, until

    demo = DemoProcess("--cameras", "2", "--json")  # runs until stopped
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

        # -- the inbox: an alert a scripted scene raises while it is open appears there with its snapshot
        d.get(base + "/ui/#/alerts")
        until(d, "return document.querySelector('#feed-state').textContent === 'live'")
        live = time.time()  # alerts decided from now are ones the open inbox receives as they happen
        # (one script reads the card: the inbox redraws its cards as alerts arrive)
        seen = until(d, """const a = [...document.querySelectorAll('article.alert.raised')].find(a =>
            parseFloat(a.dataset.decided) > %f && a.querySelector('img.evidence[data-shown]'));
            return a && {camera: a.dataset.camera, received: parseFloat(a.dataset.received),
                         decided: parseFloat(a.dataset.decided),
                         shown: parseFloat(a.querySelector('img.evidence').dataset.shown)};""" % live, timeout_s=30)
        assert seen["camera"] in ("cam0", "cam1"), seen
        late = seen["received"] - seen["decided"]
        assert late <= 2.0, f"the alert reached the inbox {late:.2f} s after it was raised"
        assert seen["shown"] - seen["decided"] <= 2.0, \
            f"its snapshot was on screen {seen['shown'] - seen['decided']:.2f} s after it was raised"

        # -- the wall: every camera's tile shows its latest snapshot
        d.get(base + "/ui/#/")
        cams = ["cam0", "cam1", STREET]
        until(d, """return %s.every(c => { const t = document.querySelector(`.tile[data-camera="${c}"]`);
            const i = t && t.querySelector('img.snap'); return i && i.dataset.loaded === '1' && i.naturalWidth > 0; });"""
              % json.dumps(cams))
        assert {t.get_attribute("data-camera") for t in d.find_elements(By.CSS_SELECTOR, ".tile")} == set(cams)

        # -- the street camera's page: the overlay is what the cache's segment of the frame shown kept
        d.get(base + f"/ui/#/camera/{STREET}")
        # (one script reads the overlay: it is redrawn every second from the newest snapshot's frame)
        shown = until(d, """const o = document.querySelector('#overlay');
            return o && o.children.length && {frame: parseInt(o.dataset.frame), cells: o.children.length,
                kept: [...o.querySelectorAll('.cell.kept')].map(c => parseInt(c.dataset.pos))};""")
        frame, kept = shown["frame"], sorted(shown["kept"])
        [seg] = [s for s in store.read(STREET) if s.frame_index == frame]
        assert kept == seg.positions.tolist() and shown["cells"] == seg.num_positions

        # -- ask: the answer streams in, with the visual tokens it read against uncompressed
        d.find_element(By.ID, "question").send_keys("What is moving in the street?")
        d.find_element(By.ID, "ask").click()
        until(d, "return document.querySelector('#answer').dataset.done", timeout_s=60)
        answer = d.find_element(By.ID, "answer")
        assert answer.get_attribute("data-done") == "1" and answer.text.strip(), answer.text
        usage = d.find_element(By.ID, "usage")
        assert 0 < int(usage.get_attribute("data-visual")) < int(usage.get_attribute("data-uncompressed"))
        # every scripted object has come and gone once (its alert cleared): stop the demo, as an operator does
        for cam in ("cam0", "cam1"):
            if not any(re.search(rf"\b{cam}\b.*CLEARED", line) for line in demo.said):
                demo.wait_for_line(rf"\b{cam}\b.*CLEARED", timeout_s=60)
        result = demo.stop(timeout_s=300)
    except BaseException:
        demo.kill()
        raise
    finally:
        if d is not None:
            d.quit()
    check_result(result)
