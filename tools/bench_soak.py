"""``streamdycoke bench soak``: many cameras for a long time while faults are injected on a schedule.

Every camera streams a synthetic video in real time (looping, ``fps`` frames per second: 10 by default,
so that 8 cameras with every frame encoded fit 2 cores) through ingest, Kafka and its Ray actor into
Redis, with every frame processed and stored (no sampler), so delivery can be checked exactly: at
the end each camera's stored frame indices must be exactly the indices ingest published, once each.
Faults, in turn, every ``fault_every_s`` seconds:

- ``redis_kill``: Valkey (append-only file, fsync always) SIGKILLed, restarted after ``outage_s``;
- ``redis_cut``: every connection to Redis dropped and refused for ``outage_s`` (a TCP proxy);
- ``broker_kill``: the broker (its log in an object store outside it) SIGKILLed, restarted;
- ``ingest_kill``: one camera's ingest stopped mid-stream and started again (new producer, resume point);
- ``actor_kill``: one camera actor's process killed (Ray restarts it, the supervisor resumes its run);
- ``llm_kill``: the LLM replica killed while questions keep coming (Serve starts another);
- ``node_lost``: the Ray worker node carrying one camera's actor killed whole (its raylet and every process
  on it SIGKILLed, as a lost machine or an evicted pod looks to Ray); its cameras restart on the surviving
  camera node, and a fresh node joins ``outage_s`` later (the node returning; nothing moves back to it).

The local Ray is a cluster of four nodes on this machine (:class:`~tools.stack.LocalStack` with
``camera_nodes=2, accelerator_node=True``): a head with Serve's gateway, two CPU workers with camera slots
only, and a node standing in for the accelerator group (custom resource ``accelerator``) that carries the
LLM replica. Where each camera and replica landed is read from ``GET /v1/fleet`` at the start and after
each node loss, and the node loss is read from the fleet's metric ``streamdycoke_fleet_nodes_lost``.

A camera fault is *survived* when every camera stores a newer frame within ``resume_s`` of the
service's return; an LLM fault when a question is answered again within ``resume_s``. Questions are
asked every 2 s throughout; none may hang (each has a 60 s client timeout): each ends in an answer or
a retryable 503. Reported: faults injected and survived by kind, time to resume, frames published /
stored / lost / stored twice per camera, questions answered / 503 / hung, lag and RSS of every process
over time (JSON, and a plot). The camera fleet's controller is not restarted here (the fleet is not
used: the bench drives the supervisor itself); its restart is a test (tests/deployments/test_faults.py).

Size: over 300 lines by its docstrings (the fault kinds and what counts as survived); the faults are
:mod:`tools.soak_faults`, the accounting and the report :mod:`tools.soak_report`.
"""

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from actors.topics import topic_indices

from .soak_faults import FAULTS, inject, last_index
from .soak_report import account, print_soak, rss_summary

__all__ = ["account", "bench_soak", "print_soak"]


def _rss_by_process() -> dict[str, float]:
    """MiB of resident memory per process of interest among :func:`~tools.procstats.own_processes` (what the
    soak started): the driver, each camera actor (``actor:PID``), the broker, Valkey, raylets and GCS."""
    import psutil

    from .procstats import own_processes, process_group

    out: dict[str, float] = {}
    for p in own_processes():
        try:
            with p.oneshot():
                name = p.name() or ""
                group = process_group(p.pid, name, " ".join(p.cmdline() or []))
                if group == "camera_actor":
                    key = f"actor:{p.pid}"
                elif group in ("driver", "broker", "valkey"):
                    key = group
                elif group == "ray_system" and name in ("raylet", "gcs_server"):
                    key = name
                else:
                    continue
                out[key] = p.memory_info().rss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def bench_soak(cameras: int = 8, duration: float = 600.0, fault_every_s: float = 60.0, outage_s: float = 3.0,
               resume_s: float = 30.0, fps: int = 10, progress: bool = True,
               faults: tuple[str, ...] = FAULTS) -> dict:
    """Run the soak (see the module's docstring); ``faults``: the kinds injected, in turn (each at least
    once whatever the duration). Returns the JSON-ready result."""
    unknown = set(faults) - set(FAULTS)
    if unknown or not faults:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; the kinds are {', '.join(FAULTS)}")
    from ray import serve

    from actors.config import CameraConfig, IngestSettings, RedisSettings
    from actors.ingest import Ingestor
    from actors.supervisor import CameraSupervisor
    from actors.token_cache import RedisTokenStore
    from streamdycoke import EncoderSpec
    from streamdycoke.video import make_camera_video

    from actors.metrics import FleetMetrics
    from deployments.app import build_app
    from deployments.config import AppArgs
    from deployments.system import get_json, post_json
    from .netfaults import TcpProxy
    from .stack import LocalStack

    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    model = EncoderSpec(weights=None)  # the tiny tower: this measures delivery, not the encoder
    res: dict = {"cameras": cameras, "duration_s": duration, "fault_every_s": fault_every_s, "outage_s": outage_s,
                 "resume_s": resume_s, "fps": fps, "fault_kinds": list(faults), "faults": [], "samples": []}
    # every camera fits on one camera node: the survivor of a node loss carries them all
    with tempfile.TemporaryDirectory() as tmp, LocalStack(durable=True, camera_nodes=2, accelerator_node=True,
                                                          camera_slots=cameras) as stack:
        proxy = TcpProxy(stack.redis_server.port)
        kafka = stack.kafka
        redis = RedisSettings(url=f"redis://127.0.0.1:{proxy.port}/0", socket_timeout_s=2.0)
        store = RedisTokenStore(stack.redis)  # the bench's own view, not through the proxy
        http_port, token = stack.http_port, stack.api_token
        serve.run(build_app(AppArgs(model=model, redis=redis, num_cpus=0.2, gateway_num_cpus=0.1, api_token=token,
                                    query_timeout_s=30, resources={"accelerator": 1})), name="soak", route_prefix="/")
        fleet_metrics = FleetMetrics()  # what the fleet deployment publishes, published by the bench's supervisor

        def fleet() -> dict:  # where everything runs, as an operator reads it
            return get_json(f"http://127.0.0.1:{http_port}/v1/fleet", token, timeout=10)

        def supervise() -> None:
            sup.supervise()
            fleet_metrics.publish_fleet(sup)
        queries = {"ok": 0, "retryable": 0, "hung": 0, "other": 0, "last_ok": 0.0}
        stop_asking = threading.Event()

        def ask() -> None:  # questions keep coming, as from users
            import urllib.error

            i = 0
            while not stop_asking.is_set():
                cam = f"soak{i % cameras}"
                i += 1
                try:
                    post_json(f"http://127.0.0.1:{http_port}/v1/query",
                          {"camera": cam, "question": "what moves?", "window_s": 5, "max_new_tokens": 4}, token,
                          timeout=60)
                    queries["ok"] += 1
                    queries["last_ok"] = time.monotonic()
                except urllib.error.HTTPError as e:
                    queries["retryable" if e.code == 503 else "other"] += 1
                except TimeoutError:
                    queries["hung"] += 1
                except OSError:
                    queries["other"] += 1
                stop_asking.wait(2.0)

        asker = threading.Thread(target=ask, daemon=True)
        try:
            ids = [f"soak{i}" for i in range(cameras)]
            log(f"making {cameras} camera videos ...")
            videos = {c: make_camera_video(Path(tmp) / f"{c}.mp4", seconds=20, fps=fps, seed=500 + i, size=(96, 128))
                      for i, c in enumerate(ids)}
            sup = CameraSupervisor(kafka, redis, model)
            for c in ids:
                sup.add(CameraConfig(id=c, sampler=None))
            if not sup.wait_ready():
                log("warning: not every camera actor was ready after 180 s")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (len(sup.camera_nodes) < cameras or not sup.replicas(every_s=0)):
                supervise()
                time.sleep(0.5)
            res["placement"] = fleet()
            deadline = time.monotonic() + 120  # each node's agent exports its series within a few report intervals
            while True:
                res["placement_metrics"] = _node_metrics(("streamdycoke_camera_node", "streamdycoke_replica_node"))
                named = {m.get("camera") or m.get("deployment") for m in res["placement_metrics"]}
                if named >= {*ids, "LLMDeployment"} or time.monotonic() > deadline:
                    break
                supervise()
                time.sleep(0.5)
            settings = IngestSettings(size=64, loop=True, realtime=True, reconnect_backoff_s=0.2, send_timeout_s=3.0)
            ingest: dict[str, tuple] = {}
            published: dict[str, int] = {c: 0 for c in ids}
            acked_runs: dict[str, list[list[list[int]]]] = {c: [] for c in ids}  # per ingest run, its acked spans

            def start_ingest(c: str) -> None:
                ing = Ingestor(c, str(videos[c]), kafka, settings)
                stop = threading.Event()
                t = threading.Thread(target=ing.run, args=(stop,), daemon=True)
                t.start()
                ingest[c] = (ing, stop, t)

            def stop_ingest(c: str) -> None:
                ing, stop, t = ingest.pop(c)
                stop.set()
                t.join(60)
                if t.is_alive():
                    raise RuntimeError(f"camera {c}: ingest did not stop within 60 s")
                published[c] += ing.stats.frames
                acked_runs[c].append(ing.stats.acked)

            for c in ids:
                start_ingest(c)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and any(store.last_frame_index(c) is None for c in ids):
                time.sleep(0.5)  # questions start once every camera has frames to ask about
            asker.start()
            t0 = time.monotonic()
            next_fault, k = t0 + fault_every_s, 0
            next_sample = t0
            log(f"soak: {cameras} cameras for {duration:.0f} s, a fault every {fault_every_s:.0f} s ...")
            while time.monotonic() - t0 < duration or k < len(faults):  # every kind at least once
                now = time.monotonic()
                if now >= next_sample:
                    stats = sup.stats()
                    res["samples"].append({"t": now - t0, "rss_mib": _rss_by_process(),
                                           "lag": {c: s.get("lag") for c, s in stats.items()},
                                           "consumed": {c: s.get("consumed") for c, s in stats.items()}})
                    next_sample = now + 10.0
                if now >= next_fault and (now - t0 < duration - resume_s or k < len(faults)):
                    kind = faults[k % len(faults)]
                    k += 1
                    at = now - t0
                    res["faults"].append({"t": at, **inject(kind, ids[k % cameras], stack, proxy, sup, supervise,
                                                             store, ids, start_ingest, stop_ingest, outage_s, resume_s,
                                                             log, queries)})
                    if kind == "node_lost":
                        res["faults"][-1]["fleet_after"] = fleet()
                    next_fault = time.monotonic() + fault_every_s
                supervise()
                time.sleep(0.5)
            stop_asking.set()
            asker.join(90)
            log("stopping ingest and draining ...")
            for c in list(ingest):
                stop_ingest(c)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                supervise()
                if all(last_index(store, c) >= max((b for r in acked_runs[c] for _, b in r), default=-1)
                       for c in ids):
                    break
                time.sleep(1.0)
            res["fleet_end"] = fleet()
            res["nodes_lost_metric"] = _metric_sum(stack.metrics_url, "ray_streamdycoke_fleet_nodes_lost")
            per_camera = {}
            final = sup.stats()
            for c in ids:
                idx = [s.frame_index for s in store.read(c)]
                per_camera[c] = {"published": published[c], "stored": len(idx),
                                 "duplicates": len(idx) - len(set(idx)),
                                 **account(acked_runs[c], *topic_indices(kafka, c), stored=set(idx)),
                                 "reported_missing": final.get(c, {}).get("frames_missing")}
            sup.shutdown()
        finally:
            stop_asking.set()
            proxy.close()
    queries.pop("last_ok")
    res["queries"] = queries
    res["per_camera"] = per_camera
    res["faults_by_kind"] = {kind: {"injected": sum(f["kind"] == kind for f in res["faults"]),
                                    "survived": sum(f["kind"] == kind and f["survived"] for f in res["faults"])}
                             for kind in faults}
    res["faults_injected"] = len(res["faults"])
    res["faults_survived"] = sum(f["survived"] for f in res["faults"])
    res["frames_published"] = sum(v["published"] for v in per_camera.values())
    res["frames_lost"] = sum(v["lost"] for v in per_camera.values())
    res["frames_lost_by_broker"] = sum(v["lost_by_broker"] for v in per_camera.values())
    res["frames_lost_in_pipeline"] = sum(v["lost_in_pipeline"] for v in per_camera.values())
    res["frames_index_reused"] = sum(v["index_reused"] for v in per_camera.values())
    res["frames_reported_missing"] = sum(v["reported_missing"] or 0 for v in per_camera.values())
    res["duplicates"] = sum(v["duplicates"] for v in per_camera.values())
    res["camera_faults_counted"] = {c: s.get("faults") for c, s in final.items()}
    resumes = [f["resume_s"] for f in res["faults"] if f["resume_s"] is not None]
    res["resume_s_median"] = statistics.median(resumes) if resumes else None
    res["resume_s_max"] = max(resumes) if resumes else None
    res["rss_mib"] = rss_summary(res["samples"])
    return res


def _scrape(url: str) -> list:
    """Every sample at a Prometheus endpoint (``prometheus_client``'s parser: name, labels, value)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def _metric_sum(url: str, name: str) -> float | None:
    """The sum of a metric's series at a Prometheus endpoint (Ray's export); None when it has none."""
    values = [s.value for s in _scrape(url) if s.name == name]
    return sum(values) if values else None


def _node_metrics(names: tuple[str, ...]) -> list[dict]:
    """The series of ``names`` (at 1) scraped from every alive Ray node's own metrics port, as label dicts
    with ``metric`` and ``scraped_from`` (the node whose agent exported it)."""
    import ray

    out = []
    for n in ray.nodes():
        if not n.get("Alive") or not n.get("MetricsExportPort"):
            continue
        try:
            samples = _scrape(f"http://127.0.0.1:{n['MetricsExportPort']}/metrics")
        except OSError:
            continue
        for s in samples:
            name = s.name.removeprefix("ray_")
            if name in names and s.value == 1.0:
                out.append({"metric": name, "scraped_from": n["NodeID"],
                            **{k: s.labels[k] for k in ("camera", "deployment", "node", "node_role") if k in s.labels}})
    return out
