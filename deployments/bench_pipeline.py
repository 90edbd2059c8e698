"""``streamdycoke bench pipeline --cameras N``: the whole system, compressed and uncompressed, side by side.

Every camera runs twice from the same source at real time (30 fps): ``camI`` with the default
compression (sampler, policy, window) and ``camI-raw`` with none (every frame processed, every
token kept). Both feed the same Redis and the same LLM deployment. After ``duration`` seconds:
sustained frames/s consumed, the lag left, frame-to-cache p50/p99; then ``queries`` questions per
camera over the same window, and query latency p50/p99 with the visual tokens each used.
"""

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from actors.config import CameraConfig, IngestSettings
from streamdycoke import EncoderSpec, PolicySpec
from streamdycoke.stats import percentile

from .config import AppArgs

__all__ = ["bench_pipeline", "print_pipeline"]

# the uncompressed twin of each camera: every frame processed, every token kept
UNCOMPRESSED = {"sampler": None, "policy": PolicySpec("fixed:1.0")}


def bench_pipeline(cameras: int = 2, duration: float = 30.0, queries: int = 5, window_s: float = 10.0,
                   model: EncoderSpec | None = None, progress: bool = True) -> dict:
    from ray import serve

    from actors.ingest import Ingestor
    from actors.ray_actor import CameraSupervisor
    from streamdycoke.encoders import encoder_shape
    from streamdycoke.video import make_camera_video

    from .app import build_app
    from .demo import _post
    from .stack import LocalStack

    log = (lambda *a: print(*a, file=sys.stderr)) if progress else (lambda *a: None)
    model = model or EncoderSpec()
    size = encoder_shape(model).input_size[0]
    res: dict = {"cameras": cameras, "duration_s": duration, "model": model.weights, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp, LocalStack() as stack:
        sources = [str(make_camera_video(Path(tmp) / f"c{i}.mp4", seconds=20, seed=200 + i)) for i in range(cameras)]
        sup = CameraSupervisor(stack.kafka, stack.redis, model)
        serve.run(build_app(AppArgs(model=model, redis=stack.redis, num_cpus=0.25, api_token=stack.api_token)),
                  name="bench", route_prefix="/")
        variants = {"compressed": {}, "uncompressed": UNCOMPRESSED}
        stop = threading.Event()
        threads = []
        streams = [(f"cam{i}" + ("" if vname == "compressed" else "-raw"), src, extra)
                   for i, src in enumerate(sources) for vname, extra in variants.items()]
        for cam, _, extra in streams:
            sup.add(CameraConfig(id=cam, **extra))
        if not sup.wait_ready():  # measure the steady state, not frames queued while encoders load
            log("warning: camera actors not ready after 180 s; measuring anyway")
        for cam, src, _ in streams:
            ing = Ingestor(cam, src, stack.kafka, IngestSettings(size=size, loop=True, realtime=True))
            t = threading.Thread(target=ing.run, args=(stop,), daemon=True)
            t.start()
            threads.append(t)
        log(f"running {2 * cameras} camera streams for {duration:.0f}s ...")
        time.sleep(5.0)  # ingest's start-up
        first = sup.stats()
        t0 = time.monotonic()
        time.sleep(duration)
        last = sup.stats()
        dt = time.monotonic() - t0
        log("querying ...")
        lat: dict[str, list[float]] = {v: [] for v in variants}
        vis: dict[str, list[int]] = {v: [] for v in variants}
        for _ in range(queries):
            for i in range(cameras):
                for vname in variants:
                    cam = f"cam{i}" + ("" if vname == "compressed" else "-raw")
                    r = _post(f"{stack.api}/v1/query",
                              {"camera": cam, "question": "What changed?", "window_s": window_s, "max_new_tokens": 8},
                              stack.api_token)
                    lat[vname].append(r["latency_ms"]["total"])
                    vis[vname].append(r["usage"]["visual_tokens"])
        stop.set()
        for vname in variants:
            cams = [c for c in last if (c.endswith("-raw")) == (vname == "uncompressed")]
            consumed = sum(last[c]["consumed"] - first.get(c, {}).get("consumed", 0) for c in cams)
            f2c = [last[c]["frame_to_cache_p50_ms"] for c in cams if last[c].get("frame_to_cache_p50_ms")]
            f2c99 = [last[c]["frame_to_cache_p99_ms"] for c in cams if last[c].get("frame_to_cache_p99_ms")]
            tin = sum(last[c]["tokens_in"] for c in cams)
            res["variants"][vname] = {
                "frames_per_s": consumed / dt, "lag_frames": sum(last[c]["lag"] or 0 for c in cams),
                "processed": sum(last[c]["processed"] for c in cams),
                "keep_ratio": sum(last[c]["tokens_kept"] for c in cams) / tin if tin else None,
                "frame_to_cache_p50_ms": statistics.median(f2c) if f2c else None,
                "frame_to_cache_p99_ms": max(f2c99) if f2c99 else None,
                "query_p50_ms": percentile(lat[vname], 0.5), "query_p99_ms": percentile(lat[vname], 0.99),
                "query_visual_tokens": statistics.median(vis[vname]),
            }
        sup.shutdown()
    c, u = res["variants"]["compressed"], res["variants"]["uncompressed"]
    res["query_speedup_p50"] = u["query_p50_ms"] / c["query_p50_ms"] if c["query_p50_ms"] else None
    return res


def print_pipeline(res: dict) -> None:
    print(f"pipeline: {res['cameras']} cameras x 2 variants at 30 fps for {res['duration_s']:.0f}s; "
          f"model {res['model']} (a tiny random one where its weights are not on this machine)")
    print(f"  {'variant':<13} {'frames/s':>9} {'lag':>5} {'keep':>6} {'f2c p50 ms':>11} {'f2c p99 ms':>11} "
          f"{'query p50 ms':>13} {'query p99 ms':>13} {'visual tok':>10}")
    for name, v in res["variants"].items():
        f = lambda x, fmt: format(x, fmt) if isinstance(x, (int, float)) else "-"  # noqa: E731
        print(f"  {name:<13} {f(v['frames_per_s'], '>9.1f')} {v['lag_frames']:>5} {f(v['keep_ratio'], '>6.3f')} "
              f"{f(v['frame_to_cache_p50_ms'], '>11.1f')} {f(v['frame_to_cache_p99_ms'], '>11.1f')} "
              f"{f(v['query_p50_ms'], '>13.1f')} {f(v['query_p99_ms'], '>13.1f')} {f(v['query_visual_tokens'], '>10.0f')}")
    if res.get("query_speedup_p50"):
        print(f"query p50: uncompressed / compressed = {res['query_speedup_p50']:.2f}x")
