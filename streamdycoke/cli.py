"""The ``streamdycoke`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

__all__ = ["main"]


def _add_compression_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="pixels", choices=["pixels", "llava-onevision"],
                   help="frame -> tokens (default: pixels, model-free)")
    p.add_argument("--model", default=None,
                   help="LLaVA-OneVision checkpoint (local path or cached hub id) for --encoder llava-onevision")
    p.add_argument("--policy", default="threshold",
                   help="threshold[:SIM] (default, training-free), fixed:RATIO, net (shipped PolicyNet), or a checkpoint path")
    p.add_argument("--target-keep-ratio", type=float, default=None, help="target keep ratio for a PolicyNet")
    p.add_argument("--window", type=int, default=16, help="W: most processed frames between keyframes")
    p.add_argument("--min-fps", type=float, default=1.0)
    p.add_argument("--max-fps", type=float, default=15.0)
    p.add_argument("--no-sampler", action="store_true", help="process every frame")


def _build(args: argparse.Namespace):
    from .encoders import get_encoder
    from .policy import load_policy
    from .sampler import SamplerConfig
    from .stream import StreamConfig

    enc_kwargs = {}
    if args.encoder == "llava-onevision":
        enc_kwargs["model"] = args.model
    encoder = get_encoder(args.encoder, **enc_kwargs)
    policy = load_policy(args.policy, args.target_keep_ratio)
    return encoder, policy, StreamConfig(window=args.window), SamplerConfig(min_fps=args.min_fps, max_fps=args.max_fps)


def cmd_compress(args: argparse.Namespace) -> int:
    from .compress import compress_video

    encoder, policy, stream_cfg, sampler_cfg = _build(args)
    report = compress_video(
        args.video, encoder, policy, stream_config=stream_cfg, sampler_config=sampler_cfg,
        use_sampler=not args.no_sampler, policy_name=args.policy, progress=not args.quiet,
        max_frames=args.max_frames,
    )
    print(report.summary())
    if args.json:
        print(json.dumps(asdict(report)))
    return 0


def cmd_make_sample(args: argparse.Namespace) -> int:
    from .video import make_camera_video

    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists (use --force to remake)")
        return 0
    make_camera_video(path, seconds=args.seconds, fps=args.fps, seed=args.seed, cuts=args.cuts)
    print(f"wrote {path}")
    return 0


def _parse_shard(text: str) -> tuple[int, int]:
    """``K/N``; ``auto/N`` takes K from a StatefulSet pod's hostname (``name-K``)."""
    import os
    import socket

    k, sep, n = text.partition("/")
    if k == "auto":
        k = (os.environ.get("HOSTNAME") or socket.gethostname()).rsplit("-", 1)[-1]
    try:
        return int(k), int(n)
    except ValueError:
        raise SystemExit(f"--shard expects K/N or auto/N (K from a hostname ending in -K), got {text!r}") from None


def cmd_ingest(args: argparse.Namespace) -> int:
    from actors.ingest import IngestSettings, Ingestor  # the pipeline extra: not needed by the core
    from actors.metrics import IngestMetrics

    if (args.config is None) == (args.source is None):
        raise SystemExit("give either SOURCE with --camera, or --config FILE")
    if args.source is not None and not args.camera:
        raise SystemExit("--camera is required with SOURCE")
    options = {}
    for kv in args.option:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise SystemExit(f"--option expects KEY=VALUE, got {kv!r}")
        options[key] = value
    settings = IngestSettings(bootstrap=args.bootstrap, size=args.size, loop=args.loop, realtime=args.realtime,
                              max_frames=args.max_frames, topic_prefix=args.topic_prefix, options=options,
                              timeout_s=args.timeout, replication_factor=args.replication_factor)
    metrics = IngestMetrics()
    server = metrics.serve(args.metrics_port) if args.metrics_port is not None else None
    where = f"; metrics on :{server.server_port}/metrics" if server is not None else ""
    try:
        if args.config is not None:
            return _ingest_fleet(args, settings, metrics, where)
        ing = Ingestor(args.camera, args.source, settings, metrics)
        print(f"camera {args.camera}: {args.source} -> {settings.bootstrap} topic {ing.topic}{where}", file=sys.stderr)
        try:
            stats = ing.run()
        except KeyboardInterrupt:
            stats = ing.stats
    finally:
        if server is not None:
            server.shutdown()
    print(json.dumps({"camera": args.camera, "frames": stats.frames, "corrupt_packets": stats.corrupt_packets,
                      "reconnects": stats.reconnects}))
    return 0


def _ingest_fleet(args: argparse.Namespace, settings, metrics, where: str) -> int:
    """``ingest --config FILE``: every camera of the file with a source (of this shard), reloaded as it changes."""
    import os
    import signal
    import threading

    from actors.camera import load_cameras
    from actors.ingest import IngestFleet

    shard = _parse_shard(args.shard)
    fleet = IngestFleet(settings, metrics, shard)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # Kubernetes stops pods with SIGTERM
    print(f"ingest: cameras from {args.config} (shard {shard[0]}/{shard[1]}) -> {settings.bootstrap}{where}",
          file=sys.stderr)
    seen = None
    try:
        while not stop.is_set():
            try:
                mtime = os.stat(args.config).st_mtime_ns
                if mtime != seen or fleet.any_failed():
                    changes = fleet.reconcile(load_cameras(args.config))
                    seen = mtime
                    if changes["started"] or changes["stopped"]:
                        print(f"ingest: started {changes['started']} stopped {changes['stopped']}", file=sys.stderr)
            except (OSError, ValueError) as exc:  # keep the last good camera list (pydantic's errors are ValueErrors)
                metrics.config_error()
                print(f"ingest: cannot use {args.config}, keeping the running cameras: {exc}", file=sys.stderr)
                seen = os.stat(args.config).st_mtime_ns if os.path.exists(args.config) else None
            stop.wait(args.reload_s)
    except KeyboardInterrupt:
        pass
    finally:
        stats = fleet.stats()
        fleet.stop()
    print(json.dumps({"cameras": {cam: {"frames": st.frames, "corrupt_packets": st.corrupt_packets,
                                        "reconnects": st.reconnects} for cam, st in stats.items()}}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from deployments.demo import run_demo  # the pipeline extra: not needed by the core

    run_demo(cameras=args.cameras, sources=args.source, duration=args.duration, question=args.question,
             model=args.model, json_out=args.json)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from deployments.demo import load_system_config, run_demo

    try:
        system = load_system_config(args.config)
    except Exception as exc:  # pydantic / YAML errors name the field or line
        raise ValueError(f"bad config {args.config}: {exc}") from None
    run_demo(system=system, duration=args.duration, question=args.question, json_out=args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamdycoke", description="Streaming visual-token compression for video LLMs")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="compress a video file or URL and report keep ratio and fidelity")
    p.add_argument("video")
    _add_compression_args(p)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--json", action="store_true", help="also print one JSON object as the last line")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("make-sample", help="write a synthetic fixed-camera video")
    p.add_argument("path")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cuts", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_make_sample)

    p = sub.add_parser("ingest", help="decode a camera (file, RTSP or HTTP) and publish its frames to Kafka")
    p.add_argument("source", nargs="?", help="file, rtsp:// or http(s):// URL (or use --config)")
    p.add_argument("--camera", help="camera id (with SOURCE)")
    p.add_argument("--config", help="cameras file (YAML/JSON, `cameras: [{id, source, ...}]`): ingest every "
                                    "camera with a source, following edits to the file")
    p.add_argument("--shard", default="0/1", help="with --config: take only shard K of N (auto/N: K from a "
                                                   "StatefulSet hostname)")
    p.add_argument("--reload-s", type=float, default=10.0, help="with --config: how often to check the file")
    p.add_argument("--replication-factor", type=int, default=1, help="of camera topics ingest creates")
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--topic-prefix", default="frames.")
    p.add_argument("--size", type=int, default=384, help="resize frames to SIZE x SIZE (the encoder's input)")
    p.add_argument("--loop", action="store_true", help="loop a file")
    p.add_argument("--realtime", action="store_true", help="pace a file by its timestamps")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="FFmpeg option for opening the source (repeatable), e.g. rtsp_transport=tcp")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds without data before the source is reopened")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("demo", help="the whole pipeline on this machine: broker, Redis, Ray, Serve, N cameras")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--source", nargs="*", default=None, help="camera sources (files or URLs); else synthetic")
    p.add_argument("--duration", type=float, default=None, help="seconds, then stop by itself")
    p.add_argument("--question", default="What is happening in the scene?")
    p.add_argument("--model", default="llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
                   help="LLaVA-OneVision checkpoint with local weights (else a tiny random one, with a warning)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run the pipeline against existing Kafka, Redis and Ray (a config file)")
    p.add_argument("--config", required=True, help="YAML or JSON: kafka, redis, ray_address, cameras, app")
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--question", default="What is happening in the scene?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    from .train import add_train_parser
    from .bench import add_bench_parser

    add_train_parser(sub)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # av.error.* subclass these
        print(f"streamdycoke: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
