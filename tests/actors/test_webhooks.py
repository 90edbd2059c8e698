"""Webhook sinks against a real HTTP endpoint (http.server on a loopback thread): the Standard Webhooks
signature, the Slack body, backoff on a fake clock, what a dead endpoint keeps, routing by query, and
the config's checks. Nothing sleeps: sends are synchronous, and the one threaded retry is awaited on an
event the endpoint sets."""

import base64
import json
import socket
import threading
import uuid

import pytest
import standardwebhooks
from pydantic import ValidationError

from actors.alerts import AlertSinks
from actors.config import CameraConfig
from actors.backoff import Backoff
from actors.webhooks import Webhook, WebhookError, WebhookSender, webhook_routes

from ..webhook_endpoint import OTHER_SECRET, SECRET, Endpoint as _Endpoint


@pytest.fixture
def endpoint():
    e = _Endpoint()
    yield e
    e.close()


class _Metrics:
    def __init__(self):
        self.failed: list[tuple[str, bool]] = []

    def publish_failed(self, sink, dropped=False):
        self.failed.append((sink, dropped))


def _alert(query="door", **extra):
    return {"schema": "streamdycoke.alert", "version": 1, "id": uuid.uuid4().hex, "camera": "dock", "query": query,
            "state": "raised", "prompt": "Is a person at the door?", "answer": "Yes, one person.", **extra}


def _hook(url, **kw):
    return Webhook(url=url, secret=SECRET, **kw)


def test_an_alert_is_posted_as_is_and_its_signature_verifies_with_the_secret_only(endpoint):
    sinks = AlertSinks(webhooks={None: [_hook(endpoint.url + "/hook")]})
    record = _alert()
    sinks(record)
    [(path, headers, body)] = endpoint.requests
    assert path == "/hook" and json.loads(body) == record and sinks.sent == {"webhook:0": 1}
    assert headers["webhook-id"] == record["id"] and headers["content-type"] == "application/json"
    assert standardwebhooks.Webhook(SECRET).verify(body, headers) == record
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(OTHER_SECRET).verify(body, headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):  # the body as signed, not another
        standardwebhooks.Webhook(SECRET).verify(body.replace(b"raised", b"cleared"), headers)


def test_the_slack_format_posts_a_text_summary_with_the_snapshot(endpoint):
    sinks = AlertSinks(webhooks={None: [_hook(endpoint.url, format="slack")]})
    snap = "/v1/cameras/dock/alerts/abc/snapshot"
    sinks(_alert(answer="yes <b>&</b>", evidence={"frame": 7, "frame_ts": 1.0,
                                                   "snapshot": {"frame": 6, "ts": 0.9, "url": snap}}))
    sinks(_alert(evidence=None))
    (_, headers, body), (_, _, plain) = endpoint.requests
    text = json.loads(body)["text"]
    assert set(json.loads(body)) == {"text"}
    assert "RAISED" in text and "`dock`" in text and "`door`" in text and "Is a person at the door?" in text
    assert "yes &lt;b&gt;&amp;&lt;/b&gt;" in text and snap in text  # Slack's escapes
    assert "snapshot" not in json.loads(plain)["text"].lower()
    standardwebhooks.Webhook(SECRET).verify(body, headers, json_parse=False)  # signed all the same


def test_a_failing_webhook_waits_out_its_backoff_then_delivers_once(endpoint):
    clock, metrics = [100.0], _Metrics()
    endpoint.statuses = [500, 500]
    sinks = AlertSinks(metrics=metrics, webhooks={None: [_hook(endpoint.url, name="ops")]}, clock=lambda: clock[0])
    record = _alert()
    sinks(record)  # 500: kept, next try after 1 s
    assert len(endpoint.requests) == 1 and list(sinks.pending["webhook:ops"]) == [record]
    for t, tries in [(100.9, 1), (101.0, 2), (102.9, 2), (103.0, 3), (500.0, 3)]:  # 1 s, then 2 s, then sent
        clock[0] = t
        sinks.retry()
        assert len(endpoint.requests) == tries, t
    assert {h["webhook-id"] for _, h, _ in endpoint.requests} == {record["id"]}  # the same alert, one id
    assert not sinks.pending["webhook:ops"] and sinks.sent["webhook:ops"] == 1
    assert metrics.failed == [("webhook", False), ("webhook", False)]  # one label for every webhook
    endpoint.statuses = [503]
    sinks(_alert())
    assert sinks.backoff["webhook:ops"].delay == 1.0  # a success reset the backoff


def test_a_dead_endpoint_keeps_max_pending_alerts_drops_the_oldest_and_slows_nothing_else():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class Store:
        def __init__(self):
            self.got = []

        def add_alert(self, record):
            self.got.append(record["id"])

    store, metrics = Store(), _Metrics()
    sinks = AlertSinks(store=store, metrics=metrics, max_pending=3, clock=lambda: 0.0,
                       webhooks={None: [_hook(f"http://127.0.0.1:{port}/", timeout_s=2)]})
    records = [_alert() for _ in range(5)]
    for r in records:
        sinks(r)
    assert store.got == [r["id"] for r in records]  # the other sink is not held up
    assert [r["id"] for r in sinks.pending["webhook:0"]] == [r["id"] for r in records[2:]]
    assert metrics.failed.count(("webhook", False)) == 1  # tried once: the rest came during its backoff
    assert metrics.failed.count(("webhook", True)) == 2  # the two oldest dropped, counted


def test_a_redirect_is_a_failure_and_is_not_followed(endpoint):
    endpoint.statuses = [307]
    sinks = AlertSinks(webhooks={None: [_hook(endpoint.url + "/hook")]})
    sinks(_alert())
    assert [p for p, _, _ in endpoint.requests] == ["/hook"] and len(sinks.pending["webhook:0"]) == 1


def test_alerts_go_to_their_cameras_webhooks_and_their_own_querys(endpoint):
    q = {"prompt": "Is a person at the door?", "every_s": 2, "rule": {"kind": "yes_no"}}
    cam = CameraConfig(id="dock", webhooks=[{"url": endpoint.url + "/camera", "secret": SECRET}], standing=[
        {**q, "id": "door", "webhooks": [{"url": endpoint.url + "/door", "secret": SECRET, "name": "door-ops"}]},
        {**q, "id": "smoke"}])
    sinks = AlertSinks(webhooks=webhook_routes(cam))
    assert set(sinks.pending) == {"webhook:0", "webhook:door-ops"}
    door, smoke = _alert("door"), _alert("smoke")
    sinks(door)
    sinks(smoke)
    got = sorted((p, json.loads(b)["id"]) for p, _, b in endpoint.requests)
    assert got == sorted([("/camera", door["id"]), ("/door", door["id"]), ("/camera", smoke["id"])])


def test_kept_alerts_are_retried_periodically_without_a_new_alert(endpoint):
    clock = [0.0]
    endpoint.statuses = [500]
    sinks = AlertSinks(webhooks={None: [_hook(endpoint.url)]}, clock=lambda: clock[0])
    sinks(_alert())
    assert sinks.waiting == 1 and not endpoint.delivered.is_set()
    clock[0] = 10.0  # past the backoff
    stop = threading.Event()
    retrier = threading.Thread(target=sinks.retry_until, args=(stop, 0.01), daemon=True)
    retrier.start()
    try:
        assert endpoint.delivered.wait(timeout=30)
    finally:
        stop.set()
        retrier.join(timeout=30)
    assert sinks.waiting == 0 and sinks.sent["webhook:0"] == 1


def test_the_secret_can_come_from_the_environment_and_its_absence_is_a_failure(endpoint, monkeypatch):
    hook = Webhook(url=endpoint.url, secret_env="DOCK_WEBHOOK_SECRET")
    monkeypatch.delenv("DOCK_WEBHOOK_SECRET", raising=False)
    with pytest.raises(WebhookError, match="DOCK_WEBHOOK_SECRET is not set"):
        WebhookSender(hook).send(_alert())
    assert endpoint.requests == []
    monkeypatch.setenv("DOCK_WEBHOOK_SECRET", SECRET)
    record = _alert()
    assert WebhookSender(hook).send(record) == 200
    [(_, headers, body)] = endpoint.requests
    assert standardwebhooks.Webhook(SECRET).verify(body, headers) == record


@pytest.mark.parametrize("fields, words", [
    ({"url": "ftp://example.com/x", "secret": SECRET}, "http:// or https://"),
    ({"url": "example.com/hook", "secret": SECRET}, "http:// or https://"),
    ({"url": "https://", "secret": SECRET}, "with a host"),
    ({"url": "https://example.com"}, "exactly one of secret and secret_env"),
    ({"url": "https://example.com", "secret": SECRET, "secret_env": "X"}, "exactly one of secret and secret_env"),
    ({"url": "https://example.com", "secret": "hunter2-hunter2-hunter2-hunter2"}, "starts with whsec_"),
    ({"url": "https://example.com", "secret": "whsec_not*base64"}, "followed by base64"),
    ({"url": "https://example.com", "secret": "whsec_" + base64.b64encode(b"short").decode()}, "24 to 64 bytes"),
    ({"url": "https://example.com", "secret_env": "1BAD"}, "secret_env"),
    ({"url": "https://example.com", "secret": SECRET, "format": "teams"}, "format"),
    ({"url": "https://example.com", "secret": SECRET, "retries": 3}, "extra"),
])
def test_bad_webhooks_are_refused_by_name(fields, words):
    with pytest.raises(ValidationError, match=words) as err:
        Webhook(**fields)
    if fields.get("secret"):
        assert fields["secret"] not in str(err.value)  # never echoed


def test_webhook_names_are_unique_within_a_camera():
    q = {"id": "door", "prompt": "anyone?", "every_s": 2, "rule": {"kind": "yes_no"},
         "webhooks": [{"url": "https://example.com/q", "secret": SECRET, "name": "ops"}]}
    with pytest.raises(ValidationError, match="webhook names must be unique"):
        CameraConfig(id="c", webhooks=[{"url": "https://example.com/c", "secret": SECRET, "name": "ops"}],
                     standing=[q])
    with pytest.raises(ValidationError, match="exactly one") as err:  # the cameras file's errors do not echo it
        CameraConfig(id="c", webhooks=[{"url": "https://example.com/c", "secret": SECRET, "secret_env": "X"}])
    assert SECRET not in str(err.value)
    ok = CameraConfig(id="c", webhooks=[{"url": "https://example.com/c", "secret": SECRET}], standing=[q])
    assert ok.webhooks[0].secret.get_secret_value() == SECRET and SECRET not in repr(ok)
    assert webhook_routes(ok) == {None: ok.webhooks, "door": ok.standing[0].webhooks}


def test_the_backoff_doubles_to_its_cap_and_resets():
    b = Backoff(first_s=1, max_s=5)
    assert [b.failed(0) for _ in range(5)] == [1, 2, 4, 5, 5]
    assert not b.ready(4.9) and b.ready(5)
    b.succeeded()
    assert b.ready(0) and b.failed(0) == 1


def test_a_hung_webhook_holds_up_neither_the_alert_stream_nor_the_thread_raising_alerts(endpoint):
    """With the sinks' thread running, webhooks go out from it: the alert stream gets the alert at once while
    the webhook's receiver hangs, and the webhook gets it when the receiver answers."""

    class Store:
        def __init__(self):
            self.got = []

        def add_alert(self, record):
            self.got.append(record["id"])

    store = Store()
    endpoint.release.clear()
    sinks = AlertSinks(store=store, webhooks={None: [_hook(endpoint.url)]})
    stop = threading.Event()
    retrier = threading.Thread(target=sinks.retry_until, args=(stop, 0.05), daemon=True)
    retrier.start()
    try:
        from ..conftest import wait_for

        wait_for(lambda: sinks._hooks_in_background, timeout_s=30)  # the retrier sends the webhooks from here on
        first = _alert()
        sinks(first)
        assert endpoint.received.wait(timeout=30)
        second = _alert()
        sinks(second)  # returns while the receiver still hangs
        assert store.got == [first["id"], second["id"]] and not endpoint.delivered.is_set()
        endpoint.release.set()
        assert endpoint.delivered.wait(timeout=30)
    finally:
        stop.set()
        retrier.join(timeout=30)
    sinks.retry()
    assert sinks.sent["webhook:0"] == 2 and sinks.waiting == 0
