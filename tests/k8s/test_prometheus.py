"""A real Prometheus (Debian's) scrapes a running pipeline, deployed as the cluster deploys it (ingest
following a camera file, the Serve app with its camera fleet), and every dashboard query gets data;
every alert expression evaluates."""

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from actors.config import IngestSettings
from actors.ingest_fleet import IngestFleet
from actors.metrics import IngestMetrics
from streamdycoke.video import make_camera_video

from ..conftest import needs_isolated_network, wait_for
from ..deployments.test_app import http
from ..deployments.test_fleet import serve_with_fleet
from .manifests import alert_rules, dashboard_queries, fill_variables, needs_kubectl, render

pytestmark = [needs_isolated_network,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="needs Debian's prometheus (make test installs it)")]


def prom_query(port: int, expr: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def pipeline(ray_cluster, tmp_path_factory):
    """Cameras -> ingest (its own metrics port) -> Kafka -> camera fleet actors -> Redis -> Serve; Prometheus."""
    from kafka import KafkaProducer
    from ray import serve

    from actors.config import load_cameras
    from tools.embedded import free_port

    stack = ray_cluster
    ray_metrics_port = stack.metrics_port
    d = tmp_path_factory.mktemp("prom")
    cams = {c: make_camera_video(d / f"{c}.mp4", seconds=4, seed=20 + i) for i, c in enumerate(("north", "south"))}
    cameras = d / "cameras.yaml"
    # north asks a standing question (the tiny LLM's token-id answers match its rule), so the standing series exist
    standing = ("    standing:\n      - {id: tokens, prompt: 'Anything?', every_s: 1, on_scene_change: true, "
                "rule: {kind: match, pattern: '<[0-9]+>'}, max_new_tokens: 2}\n")
    cameras.write_text("cameras:\n" + "".join(
        f"  - id: {c}\n    source: {p}\n" + (standing if c == "north" else "") for c, p in cams.items()))

    http_port = serve_with_fleet(ray_cluster, cameras, "streamdycoke")
    ingest_metrics = IngestMetrics()
    ingest_server = ingest_metrics.serve(free_port(), addr="127.0.0.1")
    fleet = IngestFleet(stack.kafka, IngestSettings(size=64, loop=True, realtime=True), ingest_metrics)
    fleet.reconcile(load_cameras(str(cameras)))
    # one malformed message, so the dead-letter series exists
    p = KafkaProducer(bootstrap_servers=stack.kafka.bootstrap)
    p.send("frames.north", b"not a frame")
    p.flush()
    p.close()

    prom_port = free_port()
    (d / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: ray\n    static_configs:\n      - targets: ['127.0.0.1:{ray_metrics_port}']\n"
        f"  - job_name: streamdycoke-ingest\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{ingest_server.server_port}']\n")
    prom = subprocess.Popen(["prometheus", f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    stop = threading.Event()

    def ask() -> None:  # questions keep coming, as from users, so the query panels have data
        while not stop.is_set():
            for cam in cams:
                try:
                    http(http_port, "POST", "/v1/query", {"camera": cam, "question": "anyone?", "max_new_tokens": 2})
                except OSError:
                    pass
            stop.wait(1.0)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    try:
        yield prom_port, http_port
    finally:
        stop.set()
        asker.join(30)
        fleet.stop()
        ingest_server.shutdown()
        prom.terminate()
        prom.wait(30)
        serve.delete("streamdycoke")


def test_every_dashboard_query_gets_data_from_a_running_pipeline(pipeline):
    prom_port, _ = pipeline
    pending = dict((f"{title}: {expr}", expr) for title, expr in
                   ((t, fill_variables(e, "30s")) for t, e in dashboard_queries()))
    assert len(pending) >= 20
    deadline = time.monotonic() + 240
    while pending and time.monotonic() < deadline:
        for key, expr in list(pending.items()):
            try:
                r = prom_query(prom_port, expr)
            except OSError:  # Prometheus still starting
                break
            assert r["status"] == "success", (key, r)
            if r["data"]["result"]:
                del pending[key]
        time.sleep(2)
    assert not pending, f"no data after 240 s for: {list(pending)}"


@needs_kubectl
def test_every_alert_expression_evaluates_against_the_live_series(pipeline):
    prom_port, _ = pipeline
    wait_for(lambda: prom_query(prom_port, "up")["data"]["result"], timeout_s=60)
    for rule in alert_rules(render("base")):
        r = prom_query(prom_port, rule["expr"])
        assert r["status"] == "success", (rule["alert"], r)


def test_the_fleet_runs_the_cameras_of_the_file(pipeline):
    _, http_port = pipeline
    status, body = http(http_port, "GET", "/v1/fleet")
    assert status == 200 and sorted(body["cameras"]) == ["north", "south"]
