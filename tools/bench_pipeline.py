"""``streamdycoke bench pipeline``: the whole system at real time, per stage, and as the camera count grows.

One run: ``cameras`` synthetic street cameras at 30 fps, ingested in real time (by default with edge
sampling: ingest runs each camera's sampler and sends only the frames to process), one camera actor
each, the token cache, the Serve app. With ``uncompressed``, each camera also runs a twin ``camI-raw``
with no compression (every frame sent and processed, every token kept), side by side. After the actors
are ready and a warm-up, every latency sample is dropped and ``duration`` seconds are measured:

- frames/s ingested and consumed, the lag left, keep ratio;
- frame-to-cache p50/p99 over every processed frame of every camera, and the worst camera's p99;
- p50/p99 of each stage of a frame's path (ingest: decode, sample, resize, publish; camera: transit,
  wait, encode, compress, cache_write, commit), pooled over cameras;
- Kafka bytes/s (what ingest sent), CPU cores and RSS per process group (driver = ingest threads);
- then ``queries`` questions per camera: query latency and the visual tokens each used;
- then, with ``standing_s`` > 0, each compressed camera's standing query (the LLM asked every
  ``standing_every_s`` and on each scene cut; paused until now) for ``standing_s`` with the LLM reusing
  each window's KV cache (incremental prefill), then as long without: trigger-to-decision latency
  p50/p90 by trigger, side by side. ``cuts`` puts scene cuts in the cameras' clips (the default
  clips have none, so only the period triggers) and sets the compressed cameras' cut threshold to 0.08
  (the synthetic cuts change about 0.1 of the thumbnail; the default 0.25 is for real cuts).

A sweep (``cameras=[1, 2, 4, 8, 16]``) runs one fresh stack per count and per ingest mode, prints a row
each and draws ``plot``.

Size: one benchmark: its setup, its measurement side by side and its report share the run's state; the sweep
over camera counts calls it once per count.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from actors.config import CameraConfig, IngestSettings
from streamdycoke import EncoderSpec, PolicySpec
from streamdycoke.stats import percentile

from deployments.config import AppArgs, EncoderServiceArgs
from deployments.encoder import ENCODER_DEPLOYMENT

__all__ = ["bench_pipeline", "bench_pipeline_sweep", "print_pipeline", "print_sweep"]

# the uncompressed twin of each camera: every frame processed, every token kept
UNCOMPRESSED = {"sampler": None, "policy": PolicySpec("fixed:1.0")}
INGEST_MODES = ("edge", "actor")  # where the frame sampler runs
ENCODER_PLACEMENTS = ("actor", "service")  # where frames are encoded: in each camera actor, or batched by a deployment


def _pooled(samples: list[dict[str, list[float]]]) -> dict[str, dict]:
    """Per stage, p50/p99 (ms) and count over the samples of several cameras."""
    stages: dict[str, list[float]] = {}
    for s in samples:
        for stage, xs in s.items():
            stages.setdefault(stage, []).extend(xs)
    return {stage: {"n": len(xs), "p50_ms": 1e3 * percentile(xs, 0.5), "p99_ms": 1e3 * percentile(xs, 0.99)}
            for stage, xs in stages.items() if xs}


def bench_pipeline(cameras: int = 2, duration: float = 30.0, queries: int = 5, window_s: float = 10.0,
                   model: EncoderSpec | None = None, uncompressed: bool = True, ingest: str = "edge",
                   warmup_s: float = 5.0, progress: bool = True, keep_samples: bool = False,
                   fetch_max_wait_ms: int | None = None, encoder_at: str = "actor", rss_every_s: float = 10.0,
                   standing_s: float = 0.0, standing_every_s: float = 1.0, cuts: int = 0,
                   snapshot_twin: bool = False) -> dict:
    import ray
    from ray import serve

    from actors.ingest import Ingestor
    from actors.supervisor import CameraSupervisor
    from streamdycoke.encoders import encoder_shape
    from streamdycoke.video import make_camera_video

    from deployments.app import build_app
    from deployments.system import post_json
    from .procstats import ProcessSampler
    from .stack import LocalStack

    if encoder_at not in ENCODER_PLACEMENTS:
        raise ValueError(f"encoder_at must be one of {ENCODER_PLACEMENTS}, got {encoder_at!r}")
    if ingest not in INGEST_MODES:
        raise ValueError(f"ingest must be one of {INGEST_MODES}, got {ingest!r}")
    log = (lambda *a: print(*a, file=sys.stderr)) if progress else (lambda *a: None)
    model = model or EncoderSpec()
    size = encoder_shape(model).input_size[0]
    variants = {"compressed": {}, **({"uncompressed": UNCOMPRESSED} if uncompressed else {}),
                **({"no_snapshot": {"snapshot": None}} if snapshot_twin else {})}
    suffix = {"compressed": "", "uncompressed": "-raw", "no_snapshot": "-nosnap"}
    res: dict = {"cameras": cameras, "ingest": ingest, "encoder_at": encoder_at, "duration_s": duration,
                 "model": model.weights, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp, LocalStack() as stack:
        res["camera_slots"] = stack.camera_slots
        sources = [str(make_camera_video(Path(tmp) / f"c{i}.mp4", seconds=20, seed=200 + i, cuts=cuts))
                   for i in range(cameras)]
        kafka = stack.kafka if fetch_max_wait_ms is None else stack.kafka.model_copy(
            update={"fetch_max_wait_ms": fetch_max_wait_ms})
        res["fetch_max_wait_ms"] = kafka.fetch_max_wait_ms
        service = EncoderServiceArgs(num_cpus=0.5) if encoder_at == "service" else None
        serve.run(build_app(AppArgs(model=model, redis=stack.redis, num_cpus=0.25, api_token=stack.api_token,
                                    encoder=service)), name="bench", route_prefix="/")
        encoder = serve.get_deployment_handle(ENCODER_DEPLOYMENT, app_name="bench") if service else None
        sup = CameraSupervisor(kafka, stack.redis, model, encoder_handle=encoder,
                               llm_handle=serve.get_deployment_handle("LLMDeployment", app_name="bench"))
        stop = threading.Event()
        standing = [{"id": "moving", "prompt": "Is anything moving? Answer yes or no.", "every_s": standing_every_s,
                     "on_scene_change": True, "window_s": window_s, "rule": {"kind": "yes_no"},
                     "max_new_tokens": 8}] if standing_s > 0 else []
        # the synthetic clips' cuts change about a tenth of the thumbnail, under the default cut threshold
        # (0.25, for real cuts): with cuts asked for, the compressed cameras' sampler calls them cuts
        cut_sampler = {"sampler": {"scene_cut_threshold": 0.08}} if cuts else {}
        streams = [(f"cam{i}" + suffix[vname], vname, src, CameraConfig(
            id=f"cam{i}" + suffix[vname],
            **extra, **({"standing": standing, **cut_sampler} if vname == "compressed" else {})))
            for i, src in enumerate(sources) for vname, extra in variants.items()]
        for _, _, _, cfg in streams:
            sup.add(cfg)
        t_start = time.monotonic()
        if not sup.wait_ready():  # measure the steady state, not frames queued while encoders load
            log(f"warning: camera actors not ready ({sup.unplaced or 'timed out'}); measuring anyway")
        standing_actors = [a for cam, a in sup.actors.items() if cam == cam.split("-")[0]] if standing else []
        pids = {cam: ray.get(a.pid.remote()) for cam, a in sup.actors.items()}  # each camera's CPU, by variant
        ray.get([a.set_standing.remote(paused=True) for a in standing_actors])  # until their own phase
        res["actors_ready_s"] = time.monotonic() - t_start
        ingestors: dict[str, Ingestor] = {}
        settings = IngestSettings(size=size, loop=True, realtime=True, edge_sampling=ingest == "edge")
        for cam, _, src, cfg in streams:
            ingestors[cam] = ing = Ingestor(cam, src, kafka, settings, sampler=cfg.frame_sampler)
            threading.Thread(target=ing.run, args=(stop,), daemon=True).start()
        log(f"{len(streams)} camera streams, ingest sampling at the {ingest}; warm-up {warmup_s:.0f}s, "
            f"then {duration:.0f}s measured ...")
        time.sleep(warmup_s)
        for actor in sup.actors.values():  # the steady state: forget the warm-up's samples
            ray.get(actor.reset_latencies.remote())
        for ing in ingestors.values():
            ing.stats.times.clear()
        procs = ProcessSampler()
        enc0 = encoder.stats.remote().result() if encoder else None
        first, p0, t0 = sup.stats(), procs.snapshot(), time.monotonic()
        sent0 = {c: (i.stats.frames, i.stats.bytes_sent) for c, i in ingestors.items()}
        timeline = [(0.0, p0)]  # RSS per process every rss_every_s: is memory flat?
        while (left := duration - (time.monotonic() - t0)) > 0:
            time.sleep(min(rss_every_s, left))
            if left > rss_every_s:
                timeline.append((time.monotonic() - t0, procs.snapshot()))
        sent1 = {c: (i.stats.frames, i.stats.bytes_sent) for c, i in ingestors.items()}
        dt = time.monotonic() - t0
        last, p1 = sup.stats(), procs.snapshot()
        if encoder:
            enc1 = encoder.stats.remote().result()
            sizes = {int(k): v - enc0["batch_sizes"].get(k, 0) for k, v in enc1["batch_sizes"].items()}
            sizes = {k: v for k, v in sizes.items() if v}
            res["encoder"] = {"placement": "service", "frames_per_s": (enc1["frames"] - enc0["frames"]) / dt,
                              "batch_sizes": sizes, "mean_batch": (enc1["frames"] - enc0["frames"]) / max(1, sum(
                                  sizes.values())), "forward_ms_mean": enc1["forward_ms_mean"]}
        else:
            done = sum(last[c].get("processed", 0) - first.get(c, {}).get("processed", 0) for c in last)
            res["encoder"] = {"placement": "actor", "frames_per_s": done / dt, "batch_sizes": {1: done},
                              "mean_batch": 1.0}
        samples = {cam: ray.get(a.stage_samples.remote()) for cam, a in sup.actors.items()}
        if keep_samples:
            res["samples"] = {"camera": samples, "ingest": {c: {k: list(v) for k, v in i.stats.times.recent.items()}
                                                            for c, i in ingestors.items()}}
        res["processes"] = ProcessSampler.since(p0, p1, dt)
        timeline.append((dt, p1))
        res["memory"] = _memory_growth(timeline)
        log("querying ...")
        lat: dict[str, list[float]] = {v: [] for v in variants}
        vis: dict[str, list[int]] = {v: [] for v in variants}
        for _ in range(queries):
            for cam, vname, _, _ in streams:
                r = post_json(f"{stack.api}/v1/query",
                          {"camera": cam, "question": "What changed?", "window_s": window_s, "max_new_tokens": 8},
                          stack.api_token)
                lat[vname].append(r["latency_ms"]["total"])
                vis[vname].append(r["usage"]["visual_tokens"])
        if standing_actors:
            res["standing"] = _standing_phases(standing_actors, standing_s, standing_every_s, log)
        stop.set()
        for vname in variants:
            cams = [cam for cam, v, _, _ in streams if v == vname]
            consumed = sum(last[c].get("consumed", 0) - first.get(c, {}).get("consumed", 0) for c in cams)
            ingested = sum(sent1[c][0] - sent0[c][0] for c in cams)
            nbytes = sum(sent1[c][1] - sent0[c][1] for c in cams)
            f2c = [x for c in cams for x in samples[c].get("frame_to_cache", [])]
            worst = [percentile(samples[c].get("frame_to_cache", []), 0.99) for c in cams]
            tin = sum(last[c].get("tokens_in", 0) for c in cams)
            stages = _pooled([ingestors[c].stats.times.recent for c in cams] + [samples[c] for c in cams])
            res["variants"][vname] = {
                "ingested_per_s": ingested / dt, "frames_per_s": consumed / dt,
                "lag_frames": sum(last[c].get("lag") or 0 for c in cams),
                "processed": sum(last[c].get("processed", 0) for c in cams),
                "keep_ratio": sum(last[c].get("tokens_kept", 0) for c in cams) / tin if tin else None,
                "frame_to_cache_p50_ms": 1e3 * percentile(f2c, 0.5) if f2c else None,
                "frame_to_cache_p99_ms": 1e3 * percentile(f2c, 0.99) if f2c else None,
                "worst_camera_p99_ms": 1e3 * max(w for w in worst if w is not None) if any(
                    w is not None for w in worst) else None,
                "kafka_bytes_per_s": nbytes / dt, "kafka_bytes_per_s_per_camera": nbytes / dt / len(cams),
                "stages_ms": stages,
                "query_p50_ms": percentile(lat[vname], 0.5), "query_p99_ms": percentile(lat[vname], 0.99),
                "query_visual_tokens": statistics.median(vis[vname]) if vis[vname] else None,
                "actor_cpu_cores_per_camera": _cores([pids.get(c) for c in cams], p0, p1, dt),
            }
        if snapshot_twin:  # what the snapshots weigh in the cache, per snapshot and per camera
            from actors.token_cache import RedisTokenStore

            store = RedisTokenStore(stack.redis)
            sizes = [n for cam, vname, _, _ in streams if vname == "compressed" for n in store.snapshot_sizes(cam)]
            res["snapshot_bytes"] = {"count": len(sizes), "mean": statistics.fmean(sizes) if sizes else None,
                                     "min": min(sizes, default=None), "max": max(sizes, default=None)}
        sup.shutdown()
    c, u = res["variants"]["compressed"], res["variants"].get("uncompressed")
    n = res["variants"].get("no_snapshot")
    if n and c["actor_cpu_cores_per_camera"] and n["actor_cpu_cores_per_camera"]:
        res["snapshot_cost"] = {  # the same cameras with and without snapshots, measured side by side
            "actor_cpu_ratio": c["actor_cpu_cores_per_camera"] / n["actor_cpu_cores_per_camera"],
            "frame_to_cache_p50_ms": [c["frame_to_cache_p50_ms"], n["frame_to_cache_p50_ms"]],
            "frame_to_cache_p99_ms": [c["frame_to_cache_p99_ms"], n["frame_to_cache_p99_ms"]],
            "snapshot_ms": c["stages_ms"].get("snapshot")}
    if u and c["query_p50_ms"] and u["query_p50_ms"]:
        res["query_speedup_p50"] = u["query_p50_ms"] / c["query_p50_ms"]
    drv = res["processes"].get("driver", {})
    res["ingest_cpu_cores_per_stream"] = drv.get("cpu_cores", 0.0) / len(streams)
    return res


def _cores(pids: list, p0: dict, p1: dict, dt: float) -> float | None:
    """Mean CPU cores of these processes between two :class:`~tools.procstats.ProcessSampler` snapshots."""
    got = [(p1[p][1] - p0[p][1]) / dt for p in pids if p in p0 and p in p1]
    return statistics.mean(got) if got else None


def _standing_phases(actors: list, seconds: float, every_s: float, log) -> dict:
    """Each phase: the cameras' standing queries for ``seconds``, the LLM reusing kept KV caches or not."""
    import ray

    out: dict = {"every_s": every_s, "seconds": seconds, "goal_p90_ms": 500.0}
    for name, reuse in (("reuse", True), ("no_reuse", False)):
        log(f"standing queries, {'reusing' if reuse else 'not reusing'} the KV cache: {seconds:.0f}s ...")
        ray.get([a.set_standing.remote(paused=False, reuse=reuse) for a in actors])
        time.sleep(seconds)
        lat = [x for a in ray.get([a.standing_latencies.remote() for a in actors]) for x in a]
        stats = ray.get([a.stats.remote() for a in actors])
        phase = {"rounds": len(lat), "reused_tokens": sum((s.get("standing") or {}).get("reused_tokens", 0) for s in stats)}
        for trig in (None, "period", "scene_change"):
            xs = [sec for _, t, sec in lat if trig is None or t == trig]
            key = "all" if trig is None else trig
            phase[key] = {"n": len(xs), "p50_ms": 1e3 * percentile(xs, 0.5) if xs else None,
                          "p90_ms": 1e3 * percentile(xs, 0.9) if xs else None,
                          "max_ms": 1e3 * max(xs) if xs else None}
        out[name] = phase
    ray.get([a.set_standing.remote(paused=True) for a in actors])
    return out


def _memory_growth(timeline: list[tuple[float, dict]], after_s: float = 60.0) -> dict:
    """RSS per process group from the first sample at or after ``after_s`` (the first minute: imports,
    caches and buffers filled) to the last: MiB then and now, and the largest growth of any one process
    of the group in percent. Runs shorter than ``after_s`` compare with the first sample."""
    base_t, base = next(((t, s) for t, s in timeline if t >= after_s), timeline[0])
    end_t, end = timeline[-1]
    out: dict[str, dict] = {"from_s": base_t, "to_s": end_t, "groups": {}}
    for pid, (group, _, rss) in end.items():
        if pid not in base:
            continue
        g = out["groups"].setdefault(group, {"rss_mib_from": 0.0, "rss_mib_to": 0.0, "max_growth_pct": -1e9})
        g["rss_mib_from"] += base[pid][2]
        g["rss_mib_to"] += rss
        g["max_growth_pct"] = max(g["max_growth_pct"], 100.0 * (rss - base[pid][2]) / base[pid][2])
    return out


def bench_pipeline_sweep(cameras: list[int], ingest_modes: list[str] = ("edge",), plot: str | None = None,
                         progress: bool = True, encoder_at: list[str] = ("actor",), **kw) -> dict:
    """One :func:`bench_pipeline` run per camera count, ingest mode and encoder placement, each on a fresh stack."""
    runs = []
    for mode in ingest_modes:
        for enc in encoder_at:
            for n in cameras:
                if progress:
                    print(f"== {n} cameras, sampling at the {mode}, encoding in the {enc} ==", file=sys.stderr)
                runs.append(bench_pipeline(cameras=n, ingest=mode, encoder_at=enc, progress=progress, **kw))
                if progress:
                    print_sweep({"runs": runs[-1:]}, file=sys.stderr)
    out = {"runs": runs}
    holding = [r["cameras"] for r in runs if _holds(r, 100.0)]
    out["largest_holding_100ms"] = max(holding) if holding else None
    out["largest_holding_33ms"] = max((r["cameras"] for r in runs if _holds(r, 33.0)), default=None)
    if plot and len(runs) > 1:
        _plot(out, plot)
        out["plot"] = plot
    return out


def _holds(run: dict, p99_ms: float) -> bool:
    """Real time held: every frame ingested was consumed (lag bounded: under one second of frames per
    camera at the end) and every camera's frame-to-cache p99 within ``p99_ms``."""
    c = run["variants"]["compressed"]
    return (c["worst_camera_p99_ms"] is not None and c["worst_camera_p99_ms"] <= p99_ms
            and c["lag_frames"] <= 30 * run["cameras"] and c["frames_per_s"] >= 0.95 * c["ingested_per_s"])


def _f(x, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def print_pipeline(res: dict, file=None) -> None:
    p = lambda *a: print(*a, file=file or sys.stdout)  # noqa: E731
    p(f"pipeline: {res['cameras']} cameras at 30 fps, sampling at the {res['ingest']}, {res['duration_s']:.0f}s "
      f"measured after a warm-up; model {res['model']} (a tiny random one where its weights are not on this machine)")
    p(f"  {'variant':<13} {'in f/s':>7} {'done f/s':>8} {'lag':>5} {'keep':>6} {'f2c p50':>8} {'f2c p99':>8} "
      f"{'worst p99':>9} {'KB/s/cam':>9} {'query p50':>9} {'visual tok':>10}")
    for name, v in res["variants"].items():
        p(f"  {name:<13} {_f(v['ingested_per_s'], '>7.1f')} {_f(v['frames_per_s'], '>8.1f')} {v['lag_frames']:>5} "
          f"{_f(v['keep_ratio'], '>6.3f')} {_f(v['frame_to_cache_p50_ms'], '>8.1f')} "
          f"{_f(v['frame_to_cache_p99_ms'], '>8.1f')} {_f(v['worst_camera_p99_ms'], '>9.1f')} "
          f"{_f(v['kafka_bytes_per_s_per_camera'] / 1e3, '>9.1f')} {_f(v['query_p50_ms'], '>9.1f')} "
          f"{_f(v['query_visual_tokens'], '>10.0f')}")
    p("  camera actor CPU, cores per camera: " + ", ".join(
        f"{name} {_f(v.get('actor_cpu_cores_per_camera'), '.3f')}" for name, v in res["variants"].items()))
    sc = res.get("snapshot_cost")
    if sc:
        p(f"  snapshots cost: actor CPU x{sc['actor_cpu_ratio']:.3f} of the twin without; frame-to-cache p50 "
          f"{_f(sc['frame_to_cache_p50_ms'][0], '.1f')} vs {_f(sc['frame_to_cache_p50_ms'][1], '.1f')} ms, p99 "
          f"{_f(sc['frame_to_cache_p99_ms'][0], '.1f')} vs {_f(sc['frame_to_cache_p99_ms'][1], '.1f')} ms")
    sb = res.get("snapshot_bytes")
    if sb and sb["count"]:
        p(f"  snapshots in the cache: {sb['count']}, {sb['mean'] / 1e3:.1f} KB mean ({sb['min'] / 1e3:.1f}-"
          f"{sb['max'] / 1e3:.1f} KB)")
    for name, v in res["variants"].items():
        p(f"  {name}: stage p50 / p99 ms (n)")
        for stage, s in v["stages_ms"].items():
            p(f"    {stage:<15} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f}  ({s['n']})")
    m = res.get("memory")
    if m:
        p(f"  RSS from {m['from_s']:.0f} s to {m['to_s']:.0f} s: " + ", ".join(
            f"{g} {v['rss_mib_from']:.0f} -> {v['rss_mib_to']:.0f} MiB (worst process {v['max_growth_pct']:+.1f}%)"
            for g, v in sorted(m["groups"].items())))
    p("  processes: " + ", ".join(f"{g} x{v['processes']} {v['cpu_cores']:.2f} cores {v['rss_mib']:.0f} MiB"
                                  for g, v in sorted(res["processes"].items())))
    e = res.get("encoder") or {}
    if e:
        p(f"  encoder in the {e['placement']}: {e['frames_per_s']:.1f} frames/s encoded, mean batch "
          f"{e['mean_batch']:.2f}, batch sizes {e['batch_sizes']}"
          + (f", forward pass {e['forward_ms_mean']:.1f} ms" if e.get("forward_ms_mean") else ""))
    if res.get("query_speedup_p50"):
        p(f"query p50: uncompressed / compressed = {res['query_speedup_p50']:.2f}x")
    st = res.get("standing")
    if st:
        p(f"standing queries (every {st['every_s']:g} s and on scene cuts, {st['seconds']:.0f} s each), trigger to "
          f"decision, ms (goal: p90 <= {st['goal_p90_ms']:.0f}):")
        p(f"  {'LLM prefill':<12} {'trigger':<13} {'n':>5} {'p50':>8} {'p90':>8} {'max':>8}   reused tokens")
        for name, label in (("reuse", "incremental"), ("no_reuse", "whole window")):
            ph = st[name]
            for trig in ("all", "period", "scene_change"):
                v = ph[trig]
                p(f"  {label if trig == 'all' else '':<12} {trig:<13} {v['n']:>5} {_f(v['p50_ms'], '>8.1f')} "
                  f"{_f(v['p90_ms'], '>8.1f')} {_f(v['max_ms'], '>8.1f')}   "
                  + (f"{ph['reused_tokens']}" if trig == "all" else ""))


def print_sweep(res: dict, file=None) -> None:
    p = lambda *a: print(*a, file=file or sys.stdout)  # noqa: E731
    p(f"  {'cams':>4} {'ingest':>6} {'encode':>7} {'in f/s':>7} {'done f/s':>8} {'lag':>5} {'f2c p50':>8} {'f2c p99':>8} "
      f"{'worst p99':>9} {'KB/s/cam':>9} {'cores':>6} {'actor MiB':>9} {'driver MiB':>10}")
    for r in res["runs"]:
        c = r["variants"]["compressed"]
        pr = r["processes"]
        cores = sum(g["cpu_cores"] for g in pr.values())
        p(f"  {r['cameras']:>4} {r['ingest']:>6} {r.get('encoder_at', 'actor'):>7} {_f(c['ingested_per_s'], '>7.1f')} {_f(c['frames_per_s'], '>8.1f')} "
          f"{c['lag_frames']:>5} {_f(c['frame_to_cache_p50_ms'], '>8.1f')} {_f(c['frame_to_cache_p99_ms'], '>8.1f')} "
          f"{_f(c['worst_camera_p99_ms'], '>9.1f')} {_f(c['kafka_bytes_per_s_per_camera'] / 1e3, '>9.1f')} "
          f"{cores:>6.2f} {_f(pr.get('camera_actor', {}).get('rss_mib_per_process'), '>9.0f')} "
          f"{_f(pr.get('driver', {}).get('rss_mib'), '>10.0f')}")
    if "largest_holding_100ms" in res:
        p(f"largest camera count holding real time (lag bounded, every camera's p99 <= 100 ms): "
          f"{res['largest_holding_100ms']}; <= 33 ms: {res['largest_holding_33ms']}")


def _plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in sorted({r["ingest"] for r in res["runs"]}):
        runs = [r for r in res["runs"] if r["ingest"] == mode]
        n = [r["cameras"] for r in runs]
        c = [r["variants"]["compressed"] for r in runs]
        a1.plot(n, [v["frame_to_cache_p50_ms"] for v in c], "o-", label=f"p50 ({mode} sampling)")
        a1.plot(n, [v["worst_camera_p99_ms"] for v in c], "s--", label=f"worst camera p99 ({mode})")
        a2.plot(n, [sum(g["cpu_cores"] for g in r["processes"].values()) for r in runs], "o-",
                label=f"CPU cores, all processes ({mode})")
        a2.plot(n, [r["processes"].get("driver", {}).get("cpu_cores", 0) for r in runs], "^:",
                label=f"ingest (driver) cores ({mode})")
    a1.axhline(33, color="grey", lw=0.8, ls=":")
    a1.axhline(100, color="grey", lw=0.8, ls="--")
    a1.set(xscale="log", yscale="log", xlabel="cameras at 30 fps", ylabel="frame-to-cache ms",
           title="latency (dotted: 33 ms, dashed: 100 ms)")
    a2.set(xscale="log", xlabel="cameras at 30 fps", ylabel="cores", title="CPU on a 2-core machine")
    for a in (a1, a2):
        a.set_xticks(sorted({r["cameras"] for r in res["runs"]}))
        a.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        a.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
