"""``streamdycoke demo`` (the whole system on one machine, embedded defaults) and ``streamdycoke run``
(the same against existing Kafka, Redis and Ray): one code path.

Camera actors and the Serve app; ingest of N cameras (given sources, or synthetic street cameras)
looping in real time; a live table; a question per camera; and on exit (``--duration`` or Ctrl-C)
ingest stops, the actors drain so that every ingested frame is processed, skipped or dead-lettered,
and everything started is stopped.
"""

import contextlib
import json
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from actors.config import CameraConfig, IngestSettings, KafkaSettings, read_config_file
from streamdycoke import EncoderSpec

from .config import AppArgs, SystemConfig

__all__ = ["load_system_config", "run_demo", "run_system"]

DEFAULT_QUESTION = "What is happening in the scene?"


def load_system_config(path: str) -> SystemConfig:
    """Parse and validate a system config file; errors name the offending field."""
    return SystemConfig.model_validate(read_config_file(path))


def _post(url: str, body: dict, token: str | None, timeout: float = 120.0) -> dict:
    """POST JSON with the bearer token; the parsed answer (an HTTP error raises ``HTTPError``)."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _num(x, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def _table(stats: dict, prev: dict, dt: float, queries: dict) -> str:
    rows = [f"{'camera':<10} {'consumed':>8} {'fps':>6} {'processed':>9} {'skipped':>8} {'dead':>5} "
            f"{'keep':>6} {'lag':>5} {'p50 ms':>7} {'p99 ms':>7} {'query ms':>9}"]
    for cam, s in sorted(stats.items()):
        if "error" in s:
            rows.append(f"{cam:<10} (restarting: {s['error']})")
            continue
        before = prev.get(cam, {}).get("consumed")
        fps = (s["consumed"] - before) / dt if dt and isinstance(before, int) else None
        keep = s["tokens_kept"] / s["tokens_in"] if s.get("tokens_in") else None
        q = (queries.get(cam, {}).get("latency_ms") or {}).get("total")
        rows.append(f"{cam:<10} {_num(s.get('consumed'), '>8')} {_num(fps, '>6.1f')} {_num(s.get('processed'), '>9')} "
                    f"{_num(s.get('skipped'), '>8')} {_num(s.get('dead_lettered'), '>5')} {_num(keep, '>6.3f')} "
                    f"{_num(s.get('lag'), '>5')} {_num(s.get('frame_to_cache_p50_ms'), '>7.1f')} "
                    f"{_num(s.get('frame_to_cache_p99_ms'), '>7.1f')} {_num(q, '>9.0f')}")
    return "\n".join(rows)


def run_demo(cameras: int = 2, sources: list[str] | None = None, duration: float | None = None,
             question: str = DEFAULT_QUESTION, window_s: float = 10.0, model: EncoderSpec | None = None,
             json_out: bool = False) -> dict:
    """The whole pipeline on this machine with embedded defaults (:class:`~deployments.stack.LocalStack`):
    ``cameras`` synthetic street cameras (or ``sources``) looping in real time."""
    from streamdycoke.video import make_camera_video

    from .stack import LocalStack

    from pydantic import SecretStr

    say = (lambda *a: print(*a, file=sys.stderr)) if json_out else print
    app = AppArgs(model=model or EncoderSpec(), num_cpus=0.25)
    with tempfile.TemporaryDirectory(prefix="streamdycoke-demo-") as tmp, LocalStack() as stack:
        say(f"API token (send it as 'Authorization: Bearer <token>'): {stack.api_token}")
        sources = list(sources or [])
        while len(sources) < cameras:
            i = len(sources)
            say(f"making sample camera {i} ...")
            sources.append(str(make_camera_video(Path(tmp) / f"cam{i}.mp4", seconds=20, seed=100 + i, movers=2 + i)))
        cams = [CameraConfig(id=f"cam{i}", source=src) for i, src in enumerate(sources)]
        app = app.model_copy(update={"redis": stack.redis, "api_token": SecretStr(stack.api_token)})
        result = _run(stack.kafka, app, cams, IngestSettings(loop=True, realtime=True), stack.api, stack.metrics_url,
                      duration, question, window_s, json_out, local=True)
    _report(result, json_out)  # after everything stopped: Ray's shutdown chatter comes before it
    return result


def run_system(system: SystemConfig, duration: float | None = None, question: str = DEFAULT_QUESTION,
               window_s: float = 10.0, json_out: bool = False) -> dict:
    """``streamdycoke run``: the same pipeline against the existing Kafka, Redis and Ray of ``system``."""
    import ray
    from ray import serve

    ray.init(address=system.ray_address, log_to_driver=False)
    try:
        serve.start(http_options={"host": system.http_host, "port": system.http_port})
        try:
            api = f"http://{system.http_host}:{system.http_port}"
            result = _run(system.kafka, system.app, system.cameras, system.ingest, api,
                          "each Ray node's metrics export port", duration, question, window_s, json_out, local=False)
        finally:
            serve.shutdown()
    finally:
        ray.shutdown()
    _report(result, json_out)
    return result


def _run(kafka: KafkaSettings, app: AppArgs, cams: list[CameraConfig], ingest: IngestSettings | None, api: str,
         metrics_url: str, duration: float | None, question: str, window_s: float, json_out: bool,
         local: bool) -> dict:
    """Camera actors, the Serve app, ingest of every camera with a source, a live table, a question per
    camera; on exit (``duration`` or Ctrl-C) ingest stops, the actors drain so that every ingested frame
    is processed, skipped or dead-lettered, and everything started here stops."""
    from ray import serve

    from actors.ingest import Ingestor
    from actors.metrics import IngestMetrics
    from actors.ray_actor import CameraSupervisor
    from streamdycoke.encoders import encoder_shape

    from .app import build_app

    import os

    from .guard import TOKEN_ENV

    say = (lambda *a: print(*a, file=sys.stderr)) if json_out else print
    stop_ingest = threading.Event()
    result: dict = {"cameras": {}}
    token = app.api_token.get_secret_value() if app.api_token is not None else os.environ.get(TOKEN_ENV)
    with contextlib.ExitStack() as stack:
        sup = CameraSupervisor(kafka, app.redis, app.model)
        stack.callback(sup.shutdown)
        serve.run(build_app(app), name="streamdycoke", route_prefix="/")
        ingestors, threads = {}, []
        ingest_metrics, ingest_url = IngestMetrics(), None
        if ingest is not None and any(cam.source for cam in cams):
            ingest_server = ingest_metrics.serve(0, addr="127.0.0.1" if local else "0.0.0.0")
            stack.callback(ingest_server.shutdown)
            ingest_url = f"http://127.0.0.1:{ingest_server.server_port}/metrics"
            # frames at the size the cameras' encoder (the LLM's tower) wants: resized once, while decoding
            ingest = ingest.model_copy(update={"size": encoder_shape(app.model).input_size[0]})
        changes = sup.reconcile(cams)
        for cam in changes["refused"] + changes["failed"]:
            say(f"camera {cam} not started: {sup.refused.get(cam, 'see the log')}")
        # frames published while an actor still loads its encoder would only queue: start ingest after
        if not sup.wait_ready():
            say("warning: not every camera actor was ready after 180 s; ingesting anyway")
        for cam in cams:
            if ingest is not None and cam.source and cam.id in sup.actors:
                ing = Ingestor(cam.id, cam.source, kafka,
                               ingest.model_copy(update={"options": {**ingest.options, **cam.source_options}}),
                               ingest_metrics, sampler=cam.sampler)
                ingestors[cam.id] = ing
                t = threading.Thread(target=ing.run, args=(stop_ingest,), daemon=True)
                t.start()
                threads.append(t)
        ingest_line = f"\ningest   {ingest_url}" if ingest_url else ""
        say(f"API      {api}/v1/query  {api}/v1/cameras\nmetrics  {metrics_url}{ingest_line}\n(Ctrl-C stops everything)")
        queries: dict = {}

        def ask() -> None:
            for cam in sup.actors:
                try:
                    queries[cam] = _post(f"{api}/v1/query", {"camera": cam, "question": question,
                                                             "window_s": window_s, "max_new_tokens": 16}, token)
                except Exception as exc:  # shown, not fatal: the cameras go on
                    queries[cam] = {"error": str(exc)}

        start = prev_t = time.monotonic()
        prev: dict = {}
        asked = False
        try:
            while duration is None or time.monotonic() - start < duration:
                time.sleep(1.0)
                sup.supervise()
                stats = sup.stats()
                now = time.monotonic()
                ready = stats and all((v.get("processed") or 0) > 0 for v in stats.values())
                if not asked and ready and now - start > min(8.0, (duration or 16) / 2):
                    ask()
                    asked = True
                if not json_out:
                    print("\033[2J\033[H" if sys.stdout.isatty() else "", end="")
                    print(f"StreamDyCoke  {now - start:5.0f}s   API {api}   metrics {metrics_url}")
                    print(_table(stats, prev, now - prev_t, queries))
                prev, prev_t = stats, now
        except KeyboardInterrupt:
            say("stopping ... (draining; further Ctrl-C is ignored until everything is stopped)")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.callback(signal.signal, signal.SIGINT, signal.default_int_handler)
        if not asked or any("error" in q for q in queries.values()):
            ask()  # every camera gets its question, even when the run was short, slow or too early
        stop_ingest.set()
        for t in threads:
            t.join(timeout=30)
        ingested = {cam: ing.stats.frames for cam, ing in ingestors.items()}
        deadline = time.monotonic() + 120
        stats = {}
        while time.monotonic() < deadline:  # drain: every ingested frame reaches an actor
            sup.supervise()
            stats = sup.stats()
            if all(s.get("lag") == 0 and s.get("consumed", -1) + s.get("replayed", 0) >= ingested.get(c, 0)
                   for c, s in stats.items()):
                break
            time.sleep(0.5)
        final = {}
        for cam in list(sup.actors):
            try:
                final[cam] = sup.remove(cam)
            except Exception as exc:  # an actor lost in shutdown: report what the cache knows
                say(f"camera {cam}: final stats unavailable ({type(exc).__name__})")
                final[cam] = stats.get(cam, {})
        for cam, s in final.items():
            q = queries.get(cam, {})
            result["cameras"][cam] = {
                "frames_ingested": ingested.get(cam), "frames_processed": s.get("processed"),
                "frames_skipped": s.get("skipped"), "frames_dead_lettered": s.get("dead_lettered"),
                "tokens_in": s.get("tokens_in"), "tokens_kept": s.get("tokens_kept"),
                "frame_to_cache_p50_ms": s.get("frame_to_cache_p50_ms"),
                "frame_to_cache_p99_ms": s.get("frame_to_cache_p99_ms"),
                "query": {"question": question, "answer": q.get("answer"),
                          "latency_ms": (q.get("latency_ms") or {}).get("total"),
                          "visual_tokens": (q.get("usage") or {}).get("visual_tokens"),
                          "visual_tokens_uncompressed": (q.get("usage") or {}).get("visual_tokens_uncompressed"),
                          **({"error": q["error"]} if "error" in q else {})},
            }
        result["refused"] = dict(sup.refused)
        result["api"] = api
        result["metrics"] = metrics_url
    return result


def _report(result: dict, json_out: bool) -> None:
    if json_out:
        print(json.dumps(result))
    else:
        for cam, c in result["cameras"].items():
            print(f"{cam}: {c['frames_ingested']} ingested = {c['frames_processed']} processed + "
                  f"{c['frames_skipped']} skipped + {c['frames_dead_lettered']} dead-lettered; keep ratio "
                  f"{(c['tokens_kept'] or 0) / max(1, c['tokens_in'] or 0):.3f}; answer: {c['query']['answer']!r}")
