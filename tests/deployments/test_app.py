"""The Serve application end to end: camera actors -> Redis -> Serve LLM, over real HTTP."""

import json
import urllib.error
import urllib.request

import pytest

from actors.config import CameraConfig, IngestSettings
from actors.ingest import Ingestor
from streamdycoke.video import make_camera_video

from ..conftest import needs_isolated_network, wait_for
from .conftest import TINY, TOKEN, served_app

pytestmark = needs_isolated_network


def http(port, method, path, body=None, token=TOKEN, raw: bytes | None = None, headers: dict | None = None,
         timeout: float = 60):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {}),
            **(headers or {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw_body = e.read() or b"{}"
        try:
            return e.code, json.loads(raw_body)
        except ValueError:
            return e.code, raw_body.decode(errors="replace")


def sse_alerts(port, path, n, headers=None, opened=None, timeout=30):
    """The first ``n`` alerts of ``GET path`` (server-sent events); ``opened`` is set once the stream is open."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"authorization": f"Bearer {TOKEN}", **(headers or {})})
    events, block = [], []
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        while len(events) < n:
            line = r.readline().decode().rstrip("\n")
            if line.startswith(": streamdycoke") and opened is not None:
                opened.set()
            if line:
                block.append(line)
                continue
            if any(x.startswith("event: alert") for x in block):
                record = json.loads(next(x[6:] for x in block if x.startswith("data: ")))
                record["_id"] = next(x[4:] for x in block if x.startswith("id: "))
                events.append(record)
            block = []
    return events


@pytest.fixture(scope="module")
def app(ray_cluster, tmp_path_factory):
    stack = ray_cluster
    with served_app(stack, "sdk") as sup:
        video = make_camera_video(tmp_path_factory.mktemp("v") / "a.mp4", seconds=3, seed=6)
        n = Ingestor("lobby", str(video), stack.kafka, IngestSettings(size=64)).run().frames
        sup.add(CameraConfig(id="lobby"))  # no encoder named: the LLM's own (tiny, offline) tower
        # a camera with a standing query: asked every 0.5 s and on every scene cut; the tiny random LLM always
        # answers with token ids, which the rule matches, so the condition persists from the first round on
        sup.add(CameraConfig(id="dock", standing=[{
            "id": "anything", "prompt": "Is anything moving?", "every_s": 0.5, "on_scene_change": True,
            "window_s": 2.0, "rule": {"kind": "match", "pattern": r"<\d+>"}, "max_new_tokens": 2}]))
        wait_for(lambda: sup.stats()["lobby"].get("consumed") == n, timeout_s=90)
        yield stack.http_port, sup


def test_query_answers_with_fewer_visual_tokens_than_the_uncompressed_window(app):
    port, _ = app
    status, r = http(port, "POST", "/v1/query",
                     {"camera": "lobby", "question": "is anyone there?", "window_s": 10, "max_new_tokens": 4})
    assert status == 200, r
    assert r["answer"] and r["usage"]["new_tokens"] == 4
    assert 0 < r["usage"]["visual_tokens"] < r["usage"]["visual_tokens_uncompressed"]
    assert set(r["latency_ms"]) >= {"cache_fetch", "queue", "prefill", "decode", "total"}


def test_query_metrics_are_exported_per_stage_with_batch_sizes(app, ray_cluster):
    from ..conftest import wait_for

    port, _ = app
    metrics_port = ray_cluster.metrics_port
    assert http(port, "POST", "/v1/query", {"camera": "lobby", "question": "and now?", "max_new_tokens": 2})[0] == 200

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()

    def ok_queries(text: str) -> float:
        # one line per replica that answered; the exporter pushes on its own period, so a count can lag a query
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("ray_streamdycoke_queries_total") and 'status="ok"' in line)

    def has_all() -> bool:
        text = scrape()
        return all(f'stage="{s}"' in text for s in ("cache_fetch", "queue", "prefill", "decode", "total")) and \
            "ray_streamdycoke_llm_batch_size_requests_count" in text and ok_queries(text) >= 2

    wait_for(has_all, timeout_s=60)  # this query and the one before, each counted once as ok


def test_cameras_and_health(app):
    port, sup = app
    status, r = http(port, "GET", "/v1/cameras")
    assert status == 200 and "lobby" in r["cameras"]
    cam = r["cameras"]["lobby"]
    assert cam["frames_cached"] > 0 and 0 < cam["keep_ratio"] < 1
    assert http(port, "GET", "/healthz") == (200, {"status": "ok"})


def test_a_corrupt_cache_entry_is_a_500_naming_it_found_where_the_window_is_decoded(app, ray_cluster):
    """The gateway forwards the window's bytes undecoded; the LLM replica decodes them with every check, and
    a segment whose bytes no longer match their CRC comes back as a 500 naming the camera, not an answer."""
    import torch

    from actors.token_cache import RedisTokenStore
    from streamdycoke.segment import TokenSegment

    port, _ = app
    store = RedisTokenStore(ray_cluster.redis)
    seg = TokenSegment("rotten", 0, 1000.0, torch.arange(16), torch.zeros(16, 128, dtype=torch.float16), True, (4, 4))
    assert store.append(seg)
    segs_key = store._keys("rotten")[0]
    blob = bytearray(store.client.hget(segs_key, "0"))
    blob[-1] ^= 0xFF  # a token byte: the header still reads, the CRC no longer matches
    store.client.hset(segs_key, "0", bytes(blob))
    status, r = http(port, "POST", "/v1/query", {"camera": "rotten", "question": "anything?", "max_new_tokens": 2})
    assert status == 500 and "corrupt token cache entry for 'rotten'" in r["detail"] and "CRC" in r["detail"], r


@pytest.mark.parametrize("body, code, words", [
    ({"camera": "nope", "question": "hi"}, 404, "unknown camera"),
    ({"camera": "lobby"}, 422, "question"),
    ({"camera": "lobby", "question": "hi", "window_s": -1}, 422, "window_s"),
    ({"camera": "lobby", "question": "hi", "window_s": 10_000}, 400, "over the cache's retention_s"),
])
def test_bad_requests_get_a_clear_4xx(app, body, code, words):
    port, _ = app
    status, r = http(port, "POST", "/v1/query", body)
    assert status == code and words in json.dumps(r)


def test_without_a_fleet_deployment_the_fleet_status_is_what_the_supervisor_published(app, ray_cluster):
    from actors.token_cache import RedisTokenStore

    port, sup = app
    store = RedisTokenStore(ray_cluster.redis)
    store.client.delete(f"{ray_cluster.redis.key_prefix}:fleet")
    status, body = http(port, "GET", "/v1/fleet")
    assert status == 404 and "no camera fleet" in body["detail"]  # nothing published (or it expired)
    sup.supervise()  # a supervise round publishes the placement
    status, body = http(port, "GET", "/v1/fleet")
    assert status == 200 and {"lobby", "dock"} <= set(body["cameras"]) and body["refused"] == {}


def test_every_route_but_healthz_needs_the_bearer_token(app):
    port, _ = app
    for method, path, body in (("POST", "/v1/query", {"camera": "lobby", "question": "hi"}), ("GET", "/v1/cameras", None),
                               ("GET", "/docs", None), ("GET", "/openapi.json", None), ("GET", "/v1/fleet", None)):
        for token in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
            status, r = http(port, method, path, body, token=token)
            assert status == 401 and r == {"detail": "missing or wrong bearer token"}, (path, token)
    assert http(port, "GET", "/healthz", token=None) == (200, {"status": "ok"})
    assert http(port, "GET", "/v1/cameras")[0] == 200


def test_request_size_window_and_tokens_are_bounded(app):
    port, _ = app
    big = {"camera": "lobby", "question": "hi", "pad": "x" * (10 << 20)}
    assert http(port, "POST", "/v1/query", big)[0] == 413
    # a Content-Length that lies does not get more through
    status, _ = http(port, "POST", "/v1/query", raw=b"{" + b" " * (100 << 10) + b"}", headers={"content-length": "10"})
    assert status in (400, 413, 422)
    for window in ("NaN", "Infinity", "-Infinity", "1e400"):
        raw = ('{"camera": "lobby", "question": "hi", "window_s": %s}' % window).encode()
        status, r = http(port, "POST", "/v1/query", raw=raw)
        assert status == 422 and "window_s" in json.dumps(r), (window, status, r)
    assert http(port, "POST", "/v1/query", {"camera": "lobby", "question": "hi", "max_new_tokens": 10**9})[0] == 422
    assert http(port, "POST", "/v1/query", {"camera": "../etc", "question": "hi"})[0] == 422
    assert http(port, "POST", "/v1/query", {"camera": "lobby", "question": "hi", "extra": 1})[0] == 422


def test_fuzzed_requests_only_ever_get_an_answer_or_a_4xx(app):
    """Hostile bodies and field values: the API answers 200 or a 4xx, never a 500, never a hang."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    port, _ = app
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=50))
    values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c,
                                                                                                 max_size=4)),
                          max_leaves=8)
    fields = st.fixed_dictionaries({}, optional={"camera": st.one_of(st.just("lobby"), values),
                                                 "question": st.one_of(st.just("what?"), values),
                                                 "window_s": st.one_of(st.floats(0.1, 60), values),
                                                 "max_new_tokens": st.one_of(st.integers(1, 2), values)})
    bodies = st.one_of(fields.map(lambda d: json.dumps(d, allow_nan=True).encode()), st.binary(max_size=300),
                       values.map(lambda v: json.dumps(v, allow_nan=True).encode()))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, path=st.sampled_from(["/v1/query", "/v1/cameras", "/v1/query?window_s=nan", "/nope"]))
    def check(body, path):
        status, r = http(port, "POST", path, raw=body)
        assert status == 200 or 400 <= status < 500, (status, body[:200], r)

    check()


def test_openai_client_asks_a_camera_through_chat_completions(app):
    """The official ``openai`` client against the running app: models, a completion over a camera's
    window (usage reports its visual tokens), the same answer streamed, and clear errors."""
    import openai

    port, _ = app
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0, timeout=60)
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "is anyone there?"},
        {"type": "video_url", "video_url": {"url": "camera://lobby?window_s=10"}}]}]
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=4)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4
    extra = r.usage.model_extra
    assert 0 < extra["visual_tokens"] < extra["visual_tokens_uncompressed"]
    native = http(port, "POST", "/v1/query", {"camera": "lobby", "question": "is anyone there?", "max_new_tokens": 4})[1]
    # every token the model read, counted by the replica: the chat text's and the visual ones
    assert r.usage.prompt_tokens == native["usage"]["prompt_tokens"] > extra["visual_tokens"]
    assert r.choices[0].message.content == native["answer"]  # the same greedy answer as the native API
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=4, stream=True,
                                                 stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == r.choices[0].message.content and len(pieces) == 4  # token by token
    assert chunks[-1].usage.completion_tokens == 4
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "text", "text": "hi"}, {"type": "video_url", "video_url": {"url": "camera://nobody"}}]}])
    sampled = [client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=1.5,
                                              seed=11).choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1], "temperature and seed reach transformers' generate: one seed, one sample"
    with pytest.raises(openai.BadRequestError, match="exactly one camera"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "what happened?"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()


def test_a_standing_query_raises_one_alert_to_sse_kafka_and_metrics(app, ray_cluster, tmp_path):
    """A standing query on a live camera: scene cuts and its period trigger rounds; a condition that
    persists raises one alert, served by GET /v1/alerts (filtered by camera) and sent to the alerts topic
    in schema v1; the LLM replica reuses the window's KV cache between rounds."""
    import ray
    import jsonschema
    from kafka import KafkaConsumer, TopicPartition

    from actors.alerts import ALERT_SCHEMA

    port, sup = app
    stack = ray_cluster
    video = make_camera_video(tmp_path / "dock.mp4", seconds=6, seed=3, cuts=2)  # scene changes at 2 s and 4 s
    Ingestor("dock", str(video), stack.kafka, IngestSettings(size=64, realtime=True)).run()
    wait_for(lambda: (sup.stats()["dock"].get("standing") or {}).get("rounds", 0) >= 6, timeout_s=90)
    lat = ray.get(sup.actors["dock"].standing_latencies.remote())
    assert {"period", "scene_change"} <= {trigger for _, trigger, _ in lat}, lat
    st = sup.stats()["dock"]["standing"]
    assert st["alerting"] == ["anything"] and st["reused_tokens"] > 0, st

    events = sse_alerts(port, "/v1/alerts?camera=dock&since=0", 1)
    [alert] = events
    jsonschema.validate(alert, ALERT_SCHEMA)
    assert (alert["camera"], alert["query"], alert["state"], alert["answerer"]) == ("dock", "anything", "raised", "llm")
    assert 0 <= alert["latency_s"] < 30 and alert["window"]["frames"] > 0
    # a resume point that is not an alert id is refused
    assert http(port, "GET", "/v1/alerts?since=abc")[0] == 422

    c = KafkaConsumer(**stack.kafka.client_kwargs(), enable_auto_commit=False, consumer_timeout_ms=5000)
    tp = TopicPartition(stack.kafka.alerts_topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = [json.loads(m.value) for m in c]
    c.close()
    mine = [a for a in got if a["camera"] == "dock"]
    assert [a["id"] for a in mine] == [alert["id"]], "one alert for a persisting condition, on Kafka as on SSE"


def test_a_cameras_requests_go_to_the_replica_that_holds_its_kv_caches(app, ray_cluster):
    """Two LLM replicas: a camera's standing-query requests (its id as Serve's multiplexed model id) all
    reach one replica, which prefills only what each window added since the last round."""
    from ray import serve

    from actors.answerers import LLMAnswerer
    from actors.standing import StandingQuery
    from actors.token_cache import RedisTokenStore
    from deployments.app import build_app
    from deployments.config import AppArgs
    from actors.llm_request import LLMRequest
    from streamdycoke.segment import encode_segment

    stack = ray_cluster
    serve.run(build_app(AppArgs(model=TINY, redis=stack.redis, num_cpus=0.25, num_replicas=2, api_token=TOKEN)),
              name="two", route_prefix="/two")
    try:
        llm = serve.get_deployment_handle("LLMDeployment", app_name="two")
        segs = RedisTokenStore(stack.redis).read("lobby")
        # the sampler keeps 10 to 12 of the clip's frames (its rate limit reads the send times); the rounds use 10
        assert len(segs) >= 10
        served: dict[str, list] = {"camA": [], "camB": []}
        for end in range(3, 11):  # rounds of two cameras, each window one frame longer than the last
            for cam in served:
                req = LLMRequest(cam, "anything?", 2, [encode_segment(s) for s in segs[:end]], reuse_key=f"{cam}|10")
                res = llm.options(multiplexed_model_id=cam).generate.remote(req).result(timeout_s=60)
                served[cam].append((res["replica"], res["reused_tokens"], res["prefilled_tokens"]))
        # Serve learns which replica holds a camera from the replicas' reports, so the first rounds may land on
        # either (a rebuild there: the answer is the same, only not reused); from then on the camera stays put
        # (spread at random over two replicas, 5 rounds in a row on one would happen 1 time in 16 per camera)
        for cam, rounds in served.items():
            last = rounds[-5:]
            assert len({r for r, _, _ in last}) == 1, f"{cam} moved between replicas: {rounds}"
            assert all(reused > 0 for _, reused, _ in last), rounds
        # and the plain path (no reuse key) still answers on either replica
        q = LLMRequest("lobby", "anything?", 2, [encode_segment(s) for s in segs[:6]])
        assert llm.generate.remote(q).result(timeout_s=60)["reused_tokens"] == 0
        assert LLMAnswerer(llm)("lobby", StandingQuery(id="q", prompt="anything?", every_s=1, rule={"kind": "yes_no"}),
                                [encode_segment(s) for s in segs[:6]], "lobby|10").text
    finally:
        serve.delete("two")


def test_alert_listeners_share_one_feed_each_filtered_and_a_reconnect_resumes(app, ray_cluster):
    """Several listeners at once (one reader of the alert stream per gateway replica, fanned out): each
    gets the new alerts of its cameras in order, and Last-Event-ID resumes after the alert it names."""
    import threading

    from actors.token_cache import RedisTokenStore

    port, _ = app
    store = RedisTokenStore(ray_cluster.redis)
    got: dict[str, list] = {}
    opened = {k: threading.Event() for k in ("gate", "all", "all2")}
    paths = {"gate": "/v1/alerts?camera=gate", "all": "/v1/alerts?camera=gate&camera=yard", "all2": "/v1/alerts"}
    counts = {"gate": 2, "all": 3, "all2": 3}
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, sse_alerts(port, paths[k], counts[k],
                                                                                  opened=opened[k])))
               for k in paths]
    for t in threads:
        t.start()
    assert all(e.wait(30) for e in opened.values())
    base = {"schema": "streamdycoke.alert", "version": 1, "query": "q", "state": "raised"}
    ids = [store.add_alert({**base, "camera": cam, "id": f"a{i}"}) for i, cam in enumerate(("gate", "yard", "gate"))]
    for t in threads:
        t.join(30)
    assert [a["id"] for a in got["gate"]] == ["a0", "a2"]
    assert [a["id"] for a in got["all"]] == ["a0", "a1", "a2"]
    assert [a["_id"] for a in got["all2"]] == ids
    resumed = sse_alerts(port, "/v1/alerts?camera=gate&camera=yard", 2, headers={"Last-Event-ID": ids[0]})
    assert [a["id"] for a in resumed] == ["a1", "a2"]
