"""The system's own commands, added to ``streamdycoke`` through the ``streamdycoke.commands`` entry point:
``ingest`` (a camera's frames to Kafka) and ``run`` (the system against existing Kafka, Redis and Ray).
The demo and the benchmarks register theirs from :mod:`tools.cli`.

Options that set a configuration field are generated from the pydantic models and core dataclasses
that own them (:func:`streamdycoke.config.add_options`), so a flag's default is the model's.
"""

import argparse
import json
import sys

from actors.config import IngestSettings, KafkaSettings
from streamdycoke.config import add_options, from_options

__all__ = ["MODEL_OPTIONS", "question_options", "register"]

# the LLM's model: its weights, dtype and device (its family is fixed: LLaVA-OneVision)
MODEL_OPTIONS = {"prefix": "model_", "skip": ("name",)}
# what ingest needs of the broker settings (the rest concern the camera actors)
_INGEST_KAFKA = {"skip": ("dead_letter_topic", "group_prefix", "max_poll_records")}


def register(sub, bench) -> None:
    """Add ``ingest`` and ``run`` to the ``streamdycoke`` parser (``sub``; ``bench`` is unused here)."""
    p = sub.add_parser("ingest", help="decode a camera (file, RTSP or HTTP) and publish its frames to Kafka")
    p.add_argument("source", nargs="?", help="file, rtsp:// or http(s):// URL (or use --config)")
    p.add_argument("--camera", help="camera id (with SOURCE)")
    p.add_argument("--config", help="cameras file (YAML/JSON, `cameras: [{id, source, ...}]`): ingest every "
                                    "camera with a source, following edits to the file")
    p.add_argument("--shard", default="0/1", help="with --config: take only shard K of N (auto/N: K from a "
                                                   "StatefulSet hostname)")
    p.add_argument("--reload-s", type=float, default=10.0, help="with --config: how often to check the file")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="FFmpeg option for opening the source (repeatable), e.g. rtsp_transport=tcp")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    p.add_argument("--metrics-addr", default="0.0.0.0",
                   help="address the metrics listen on: where Prometheus reaches them (127.0.0.1 on one machine)")
    add_options(p, KafkaSettings, prefix="kafka_", **_INGEST_KAFKA)
    add_options(p, IngestSettings, prefix="ingest_")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("run", help="run the pipeline against existing Kafka, Redis and Ray (a config file)")
    p.add_argument("--config", required=True, help="YAML or JSON: kafka, app, ingest, cameras, ray_address")
    p.add_argument("--duration", type=float, default=None)
    question_options(p)
    p.set_defaults(func=cmd_run)

def question_options(p: argparse.ArgumentParser) -> None:
    """``--question`` (asked of each camera at the end of a run) and ``--json``."""
    from .system import DEFAULT_QUESTION

    p.add_argument("--question", default=DEFAULT_QUESTION)
    p.add_argument("--json", action="store_true", help="also print one JSON object as the last line")


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
    from actors.ingest import Ingestor
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
    kafka = from_options(KafkaSettings, args, prefix="kafka_")
    settings = from_options(IngestSettings, args, prefix="ingest_", options=options)
    metrics = IngestMetrics()
    server = metrics.serve(args.metrics_port, args.metrics_addr) if args.metrics_port is not None else None
    where = f"; metrics on :{server.server_port}/metrics" if server is not None else ""
    try:
        if args.config is not None:
            return _ingest_fleet(args, kafka, settings, metrics, where)
        ing = Ingestor(args.camera, args.source, kafka, settings, metrics)
        print(f"camera {args.camera}: {args.source} -> {kafka.bootstrap} topic {ing.topic}{where}", file=sys.stderr)
        try:
            stats = ing.run()
        except KeyboardInterrupt:
            stats = ing.stats
    finally:
        if server is not None:
            server.shutdown()
    print(json.dumps({"camera": args.camera, "frames": stats.frames, "corrupt_packets": stats.corrupt_packets,
                      "reconnects": stats.reconnects, "send_failures": stats.send_failures}))
    return 0


def _ingest_fleet(args: argparse.Namespace, kafka, settings, metrics, where: str) -> int:
    """``ingest --config FILE``: every camera of the file with a source (of this shard), reloaded as it changes."""
    import os
    import signal
    import threading

    from actors.config import load_cameras
    from actors.ingest_fleet import IngestFleet

    shard = _parse_shard(args.shard)
    fleet = IngestFleet(kafka, settings, metrics, shard)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # Kubernetes stops pods with SIGTERM
    print(f"ingest: cameras from {args.config} (shard {shard[0]}/{shard[1]}) -> {kafka.bootstrap}{where}",
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
                                        "reconnects": st.reconnects, "send_failures": st.send_failures}
                                  for cam, st in stats.items()}}))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .system import load_system_config, run_system

    try:
        system = load_system_config(args.config)
    except Exception as exc:  # pydantic / YAML errors name the field or line
        raise ValueError(f"bad config {args.config}: {exc}") from None
    run_system(system, duration=args.duration, question=args.question, json_out=args.json)
    return 0
