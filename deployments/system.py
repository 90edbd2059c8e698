"""``streamdycoke run``: the system against existing Kafka, Redis and Ray (a config file), and the run
loop the demo shares with it.

:func:`run_pipeline` starts the camera actors and the Serve app, ingests every camera with a source,
shows a live table with the alerts as they are raised, asks each camera one question the LLM can
read, and on exit (``duration`` or Ctrl-C) stops ingest, lets the actors drain so that every ingested
frame is processed, skipped or dead-lettered, and stops everything it started. ``streamdycoke demo``
(:mod:`tools.demo`) runs the same loop on an embedded local stack.
"""

import contextlib
import json
import os
import signal
import sys
import threading
import time
import urllib.request

from actors.camera_stats import CameraStats
from actors.config import CameraConfig, IngestSettings, KafkaSettings, read_config_file

from .config import AppArgs, SystemConfig

__all__ = ["DEFAULT_QUESTION", "alert_line", "get_json", "load_system_config", "post_json", "report", "run_pipeline", "run_system"]

DEFAULT_QUESTION = "What is happening in the scene?"


def load_system_config(path: str) -> SystemConfig:
    """Parse and validate a system config file; errors name the offending field."""
    return SystemConfig.model_validate(read_config_file(path))


def post_json(url: str, body: dict, token: str | None, timeout: float = 120.0) -> dict:
    """POST JSON with the bearer token; the parsed answer (an HTTP error raises ``HTTPError``)."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def get_json(url: str, token: str | None, timeout: float = 30.0) -> dict:
    """GET with the bearer token; the parsed answer (an HTTP error raises ``HTTPError``)."""
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _num(x, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def _table(stats: dict, prev: dict, dt: float, queries: dict) -> str:
    rows = [f"{'camera':<10} {'consumed':>8} {'fps':>6} {'processed':>9} {'skipped':>8} {'dead':>5} "
            f"{'keep':>6} {'lag':>5} {'p50 ms':>7} {'p99 ms':>7} {'query ms':>9}"]
    for cam, raw in sorted(stats.items()):
        s = CameraStats.model_validate(raw)
        if s.error:
            rows.append(f"{cam:<10} (restarting: {s.error})")
            continue
        before = prev.get(cam, {}).get("consumed")
        fps = (s.consumed - before) / dt if dt and isinstance(before, int) else None
        q = (queries.get(cam, {}).get("latency_ms") or {}).get("total")
        rows.append(f"{cam:<10} {_num(s.consumed, '>8')} {_num(fps, '>6.1f')} {_num(s.processed, '>9')} "
                    f"{_num(s.skipped, '>8')} {_num(s.dead_lettered, '>5')} {_num(s.keep_ratio, '>6.3f')} "
                    f"{_num(s.lag, '>5')} {_num(s.frame_to_cache_p50_ms, '>7.1f')} "
                    f"{_num(s.frame_to_cache_p99_ms, '>7.1f')} {_num(q, '>9.0f')}")
    return "\n".join(rows)


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
            result = run_pipeline(system.kafka, system.app, system.cameras, system.ingest, api,
                          "each Ray node's metrics export port", duration, question, window_s, json_out, local=False,
                          deploy_timeout_s=system.deploy_timeout_s)
        finally:
            serve.shutdown()
    finally:
        ray.shutdown()
    report(result, json_out)
    return result


def run_pipeline(kafka: KafkaSettings, app: AppArgs, cams: list[CameraConfig], ingest: IngestSettings | None, api: str,
         metrics_url: str, duration: float | None, question: str, window_s: float, json_out: bool,
         local: bool, deploy_timeout_s: float = 600.0) -> dict:
    """Camera actors, the Serve app, ingest of every camera with a source, a live table, a question per
    camera; on exit (``duration`` or Ctrl-C) ingest stops, the actors drain so that every ingested frame
    is processed, skipped or dead-lettered, and everything started here stops."""
    from ray import serve

    from actors.ingest import Ingestor
    from actors.metrics import IngestMetrics
    from actors.supervisor import CameraSupervisor
    from streamdycoke.encoders import encoder_shape

    from .app import build_app
    from .deploy import deploy_app
    from .guard import TOKEN_ENV

    say = (lambda *a: print(*a, file=sys.stderr)) if json_out else print
    stop_ingest = threading.Event()
    result: dict = {"cameras": {}}
    token = app.api_token.get_secret_value() if app.api_token is not None else os.environ.get(TOKEN_ENV)
    with contextlib.ExitStack() as stack:
        deploy_app(build_app(app), "streamdycoke", deploy_timeout_s, say)  # given up on, saying why, at the deadline
        # the LLM deployment answers the cameras' standing queries that name it (routed by camera)
        sup = CameraSupervisor(kafka, app.redis, app.model,
                               llm_handle=serve.get_deployment_handle("LLMDeployment", app_name="streamdycoke"))
        stack.callback(sup.shutdown)
        from actors.token_cache import RedisTokenStore

        alerts_store = RedisTokenStore(app.redis)
        try:
            alerts_from = alerts_store.last_alert_id() or "0-0"  # this run's alerts: those added from now
        except Exception:
            alerts_from = "0-0"
        alerts: list[dict] = []
        camera_ids = {c.id for c in cams}  # (sup.configs empties as the actors are removed at the end)
        ingestors, threads = {}, []
        ingest_metrics, ingest_url = IngestMetrics(), None
        if ingest is not None and any(cam.source for cam in cams):
            ingest_server = ingest_metrics.serve(0, addr="127.0.0.1" if local else "0.0.0.0")
            stack.callback(ingest_server.shutdown)
            ingest_url = f"http://127.0.0.1:{ingest_server.server_port}/metrics"
        changes = sup.reconcile(cams)
        for cam in changes["refused"] + changes["failed"]:
            say(f"camera {cam} not started: {sup.refused.get(cam, 'see the log')}")
        # frames published while an actor still loads its encoder would only queue: start ingest after
        if not sup.wait_ready():
            say("warning: not every camera actor was ready after 180 s; ingesting anyway")
        for cam in cams:
            if ingest is not None and cam.source and cam.id in sup.actors:
                # frames at the size the camera's encoder wants: resized once, while decoding
                size = cam.frame_size(encoder_shape(app.model).input_size[0])
                ing = Ingestor(cam.id, cam.source, kafka,
                               ingest.model_copy(update={"options": {**ingest.options, **cam.source_options},
                                                         "size": size}),
                               ingest_metrics, sampler=cam.frame_sampler)
                ingestors[cam.id] = ing
                t = threading.Thread(target=ing.run, args=(stop_ingest,), daemon=True)
                t.start()
                threads.append(t)
        ingest_line = f"\ningest   {ingest_url}" if ingest_url else ""
        say(f"console  {api}/ui/  (sign in with the API token)\nAPI      {api}/v1/query  {api}/v1/cameras\n"
            f"metrics  {metrics_url}{ingest_line}\ncache    {app.redis.url}{' (cluster)' if app.redis.cluster else ''}\n"
            "(Ctrl-C stops everything)")
        queries: dict = {}

        def ask() -> None:
            for cam in sup.actors:
                enc = sup.configs[cam].pipeline_config(app.model).encoder
                if enc.name != app.model.name:  # tokens the LLM cannot read (an event-QA camera): not asked
                    queries[cam] = {"skipped": f"{enc.name} tokens; the LLM reads {app.model.name}'s"}
                    continue
                try:
                    queries[cam] = post_json(f"{api}/v1/query", {"camera": cam, "question": question,
                                                             "window_s": window_s, "max_new_tokens": 16}, token)
                except Exception as exc:  # shown, not fatal: the cameras go on
                    queries[cam] = {"error": str(exc)}

        def new_alerts() -> list[dict]:
            nonlocal alerts_from
            try:
                got = alerts_store.read_alerts(alerts_from, count=1000)
            except Exception as exc:  # the cache is down: said, tried next round
                say(f"alerts unavailable: {type(exc).__name__}: {exc}")
                return []
            if got:
                alerts_from = got[-1][0]
            fresh = [a for _, a in got if a is not None and a.get("camera") in camera_ids]
            alerts.extend(fresh)
            return fresh

        start = prev_t = time.monotonic()
        prev: dict = {}
        asked = False
        try:
            while duration is None or time.monotonic() - start < duration:
                time.sleep(1.0)
                sup.supervise()
                stats = sup.stats()
                fresh = new_alerts()
                if json_out:
                    for a in fresh:
                        say(alert_line(a))
                now = time.monotonic()
                ready = stats and all((v.get("processed") or 0) > 0 for v in stats.values())
                if not asked and ready and now - start > min(8.0, (duration or 16) / 2):
                    ask()
                    asked = True
                if not json_out:
                    print("\033[2J\033[H" if sys.stdout.isatty() else "", end="")
                    print(f"StreamDyCoke  {now - start:5.0f}s   console {api}/ui/   API {api}   metrics {metrics_url}")
                    print(_table(stats, prev, now - prev_t, queries))
                    if alerts:
                        print("\nalerts (newest last)")
                        for a in alerts[-8:]:
                            print(alert_line(a))
                prev, prev_t = stats, now
        except KeyboardInterrupt:
            say("stopping ... (draining; further Ctrl-C is ignored until everything is stopped)")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.callback(signal.signal, signal.SIGINT, signal.default_int_handler)
        if not asked or any("error" in q for q in queries.values()) or not queries:
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
        by_id = {c.id: c for c in cams}
        for cam, s in final.items():
            q = queries.get(cam, {})
            result["cameras"][cam] = {
                "ingest_start_ts": ingestors[cam].stats.start_ts if cam in ingestors else None,
                "frames_ingested": ingested.get(cam), "frames_processed": s.get("processed"),
                "frames_skipped": s.get("skipped"), "frames_dead_lettered": s.get("dead_lettered"),
                "tokens_in": s.get("tokens_in"), "tokens_kept": s.get("tokens_kept"),
                "frame_to_cache_p50_ms": s.get("frame_to_cache_p50_ms"),
                "frame_to_cache_p99_ms": s.get("frame_to_cache_p99_ms"),
                "standing": [sq.prompt for sq in by_id[cam].standing] if cam in by_id else [],
                "query": {"question": question, "answer": q.get("answer"),
                          "latency_ms": (q.get("latency_ms") or {}).get("total"),
                          "visual_tokens": (q.get("usage") or {}).get("visual_tokens"),
                          "visual_tokens_uncompressed": (q.get("usage") or {}).get("visual_tokens_uncompressed"),
                          **({"error": q["error"]} if "error" in q else {}),
                          **({"skipped": q["skipped"]} if "skipped" in q else {})},
            }
        new_alerts()  # those raised while draining
        for cam in result["cameras"]:
            result["cameras"][cam]["alerts"] = [
                {k: a[k] for k in ("state", "query", "answer", "trigger", "trigger_ts", "decided_ts", "latency_s")}
                | {"window_end_ts": a["window"]["end_ts"], "frames": a["window"]["frames"]}
                for a in alerts if a["camera"] == cam]
        result["refused"] = dict(sup.refused)
        result["api"] = api
        result["metrics"] = metrics_url
    return result


def alert_line(a: dict) -> str:
    return (f"  {time.strftime('%H:%M:%S', time.localtime(a['decided_ts']))} {a['camera']:<8} {a['query']:<20} "
            f"{a['state'].upper():<8} answer {a['answer']!r:<6} ({a['trigger']}, {1e3 * a['latency_s']:.0f} ms "
            "from trigger)")



def report(result: dict, json_out: bool, more=None) -> None:
    """Print a run's result: one JSON object (``json_out``) or a line per camera, each followed by the
    lines ``more(camera_result)`` gives (the demo's ground truth)."""
    if json_out:
        print(json.dumps(result))
    else:
        for cam, c in result["cameras"].items():
            q = c["query"]
            said = f"answer: {q['answer']!r}" if "skipped" not in q else f"LLM question skipped ({q['skipped']})"
            print(f"{cam}: {c['frames_ingested']} ingested = {c['frames_processed']} processed + "
                  f"{c['frames_skipped']} skipped + {c['frames_dead_lettered']} dead-lettered; keep ratio "
                  f"{(c['tokens_kept'] or 0) / max(1, c['tokens_in'] or 0):.3f}; {said}")
            if more is not None:
                for line in more(c):
                    print(line)
