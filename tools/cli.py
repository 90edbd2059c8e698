"""The demo's and the benchmarks' commands, added to ``streamdycoke`` through the ``streamdycoke.commands``
entry point: ``demo`` and ``bench pipeline | soak | transit | standing | decode``.

Options that set a configuration field are generated from the models that own them
(:func:`streamdycoke.config.add_options`), so a flag's default is the model's.
"""

import argparse
import json

from actors.config import IngestSettings
from deployments.cli import MODEL_OPTIONS, question_options
from streamdycoke import EncoderSpec
from streamdycoke.bench import bench_common_options
from streamdycoke.config import add_options, from_options

__all__ = ["register"]


def register(sub, bench) -> None:
    """Add ``demo`` to the ``streamdycoke`` parser (``sub``) and the pipeline benchmarks to ``bench``."""
    p = sub.add_parser("demo", help="the whole pipeline on this machine: broker, Redis, Ray, Serve, N cameras")
    p.add_argument("--cameras", type=int, default=None, help=(
        "cameras: of the --source(s) in turn (default: one per source), else of scripted scenes (default: 2; "
        "offline, with a street camera the LLM reads beside them)"))
    p.add_argument("--source", nargs="*", default=None, help="camera sources (files or URLs); else scripted scenes")
    p.add_argument("--duration", type=float, default=None, help="seconds, then stop by itself")
    p.add_argument("--screenshots", metavar="DIR", default=None,
                   help="save pictures of the console there once it has an alert to show (headless Chromium)")
    question_options(p)
    add_options(p, EncoderSpec, **MODEL_OPTIONS)
    p.set_defaults(func=cmd_demo)

    q = bench.add_parser("pipeline", help="the whole pipeline at real time: latency by stage, compressed and "
                                          "uncompressed side by side; a sweep over camera counts")
    q.add_argument("--cameras", type=_int_list, default=[2], help="cameras at 30 fps; a list (1,2,4,8,16) sweeps, "
                                                                  "one fresh stack per count")
    q.add_argument("--duration", type=float, default=30.0, help="seconds measured, after the warm-up")
    q.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    q.add_argument("--queries", type=int, default=None, help="questions per camera and variant (default: 5; 2 in "
                                                             "a sweep)")
    q.add_argument("--ingest", type=lambda t: t.split(","), default=["edge"], metavar="edge,actor",
                   help="where the frame sampler runs: edge (ingest sends only the chosen frames), actor (ingest "
                        "sends every frame); a list compares them, one run each")
    q.add_argument("--encode-in", type=lambda t: t.split(","), default=["actor"], metavar="actor,service",
                   help="where frames are encoded: in each camera actor, or by the encoder deployment batching "
                        "across cameras; a list compares them, one run each")
    q.add_argument("--uncompressed", action=argparse.BooleanOptionalAction, default=None,
                   help="run an uncompressed twin of each camera (default: for a single run, not in a sweep)")
    q.add_argument("--no-snapshot-twin", action="store_true", help=(
        "run a twin of each camera that takes no snapshots (the console's pictures), side by side: their cost"))
    q.add_argument("--plot", default="docs/bench_pipeline_sweep.png", help="a sweep's plot")
    q.add_argument("--fetch-max-wait-ms", type=int, default=None,
                   help="the camera consumers' fetch wait (default: KafkaSettings' own)")
    q.add_argument("--standing-duration", type=float, default=None, help=(
        "seconds of standing queries with the LLM reusing each window's KV cache, then as many without "
        "(default: 20 for a single run, 0 in a sweep: none)"))
    q.add_argument("--standing-every", type=float, default=1.0, help="seconds between a standing query's rounds")
    q.add_argument("--cuts", type=int, default=0, help="scene cuts in each camera's 20 s clip (they trigger the "
                                                       "standing queries)")
    add_options(q, EncoderSpec, **MODEL_OPTIONS)
    bench_common_options(q)
    q.set_defaults(func=cmd_bench_pipeline)

    q = bench.add_parser("soak", help="many cameras for long while faults are injected: delivery, resume time, RSS")
    q.add_argument("--cameras", type=int, default=8)
    q.add_argument("--duration", type=float, default=600.0, help="seconds")
    q.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults")
    q.add_argument("--outage", type=float, default=3.0, help="seconds a killed or cut service stays down")
    q.add_argument("--fps", type=int, default=10, help="frames per second of each camera (every one is stored)")
    q.add_argument("--resume", type=float, default=30.0, help="seconds within which every camera must store a "
                                                              "newer frame for a fault to count as survived")
    q.add_argument("--faults", type=lambda v: tuple(x for x in v.split(",") if x), default=None,
                   help="fault kinds to inject in turn, comma-separated (default: every kind: "
                        "redis_kill,redis_cut,broker_kill,ingest_kill,actor_kill,llm_kill,node_lost)")
    q.add_argument("--plot", default="docs/soak.png", help="where to draw lag and RSS over time")
    bench_common_options(q)
    q.set_defaults(func=cmd_bench_soak)

    q = bench.add_parser("transit", help="the embedded broker alone: Kafka transit for each consumer fetch wait")
    q.add_argument("--waits", type=_int_list, default=[500, 100, 20, 10, 5], help="fetch_max_wait_ms values")
    q.add_argument("--frames", type=int, default=150, help="messages per value, at 30 a second")
    bench_common_options(q)
    q.set_defaults(func=cmd_bench_transit)

    q = bench.add_parser("standing", help="a standing query's rounds on a real-size LLM, with and without "
                                          "incremental prefill, side by side")
    q.add_argument("--window", type=float, default=10.0, help="the query's window_s")
    q.add_argument("--every", type=float, default=1.0, help="seconds of stream between rounds")
    q.add_argument("--seconds", type=float, default=40.0, help="seconds of the camera's stream")
    q.add_argument("--max-new-tokens", type=int, default=8)
    q.add_argument("--tiny", action="store_true", help="the tiny model (a smoke test)")
    q.add_argument("--plot", default=None, help="draw each round's latency over the stream's time here (PNG)")
    bench_common_options(q)
    q.set_defaults(func=cmd_bench_standing)

    q = bench.add_parser("decode", help="ingest's per-frame cost: PyAV decode + resize")
    q.add_argument("--video", default=None, help="the clip (default: the real 720p one)")
    q.add_argument("--repeats", type=int, default=3)
    add_options(q, IngestSettings, prefix="ingest_", skip=("loop", "realtime", "max_frames", "reconnect_backoff_s",
                                                          "reconnect_backoff_max_s", "max_reconnects", "timeout_s",
                                                          "send_timeout_s"))
    bench_common_options(q)
    q.set_defaults(func=cmd_bench_decode)


def _int_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,...; got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"camera counts must be >= 1; got {text!r}")
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(cameras=args.cameras, sources=args.source, duration=args.duration, question=args.question,
             model=from_options(EncoderSpec, args, prefix="model_"), json_out=args.json, screenshots=args.screenshots)
    return 0


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from .bench_pipeline import bench_pipeline, bench_pipeline_sweep, print_pipeline, print_sweep

    sweep = len(args.cameras) > 1 or len(args.ingest) > 1 or len(args.encode_in) > 1
    kw = dict(duration=args.duration, warmup_s=args.warmup, fetch_max_wait_ms=args.fetch_max_wait_ms, model=from_options(EncoderSpec, args, prefix="model_"),
              queries=args.queries if args.queries is not None else (2 if sweep else 5),
              uncompressed=args.uncompressed if args.uncompressed is not None else not sweep,
              standing_s=args.standing_duration if args.standing_duration is not None else (0.0 if sweep else 20.0),
              standing_every_s=args.standing_every, cuts=args.cuts, snapshot_twin=args.no_snapshot_twin)
    if sweep:
        res = bench_pipeline_sweep(args.cameras, args.ingest, plot=args.plot, progress=not args.quiet,
                                   encoder_at=args.encode_in, **kw)
        print_sweep(res)
        for run in res["runs"]:
            print_pipeline(run)
    else:
        res = bench_pipeline(cameras=args.cameras[0], ingest=args.ingest[0], encoder_at=args.encode_in[0],
                             progress=not args.quiet, **kw)
        print_pipeline(res)
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from .bench_soak import bench_soak, print_soak

    res = bench_soak(cameras=args.cameras, duration=args.duration, fault_every_s=args.fault_every,
                     outage_s=args.outage, resume_s=args.resume, fps=args.fps, progress=not args.quiet,
                     **({"faults": args.faults} if args.faults else {}))
    print_soak(res, args.plot)
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_transit(args: argparse.Namespace) -> int:
    from .bench_transit import bench_transit, print_transit

    res = bench_transit(waits_ms=args.waits, frames=args.frames, progress=not args.quiet)
    print_transit(res)
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_standing(args: argparse.Namespace) -> int:
    from .bench_standing import bench_standing, plot_standing, print_standing

    res = bench_standing(window_s=args.window, every_s=args.every, seconds=args.seconds,
                         max_new_tokens=args.max_new_tokens, tiny=args.tiny, progress=not args.quiet)
    print_standing(res)
    if args.plot:
        plot_standing(res, args.plot)
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_decode(args: argparse.Namespace) -> int:
    from .bench_decode import bench_decode

    res = bench_decode(video=args.video, size=args.ingest_size, repeats=args.repeats, progress=not args.quiet)
    print(f"ingest decode + resize ({res['source']} -> {res['size']}x{res['size']} RGB, {res['cpus']} CPUs): "
          f"{res['decode_fps']:.0f} frames/s = {res['cameras_at_30fps']:.1f} cameras at 30 fps")
    if args.json:
        print(json.dumps(res))
    return 0
