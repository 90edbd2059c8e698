"""The ``streamdycoke`` command.

The core registers its own commands (``compress``, ``make-sample``, ``train-policy``, ``bench
compress``, ``bench prefill``). Other installed packages add theirs through the
``streamdycoke.commands`` entry-point group: each entry point is a function ``register(sub, bench)``
given the top-level and the ``bench`` subparsers. The system registers ``ingest`` and ``run`` that way
(:mod:`deployments.cli`), the tools ``demo`` and the pipeline benchmarks (:mod:`tools.cli`), so the core
imports nothing of them; an entry point whose package is not installed (the image ships no ``tools``)
is left out.

Options that set a configuration field are generated from the field (:func:`streamdycoke.config.add_options`),
so their defaults are the configuration's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from importlib.metadata import entry_points
from pathlib import Path

from .config import PipelineConfig, add_options, from_options
from .encoders import EncoderSpec
from .policy import PolicySpec
from .sampler import SamplerConfig
from .stream import StreamConfig

__all__ = ["add_pipeline_options", "build_parser", "main", "pipeline_config_from"]

ENTRY_POINT_GROUP = "streamdycoke.commands"


def add_pipeline_options(p: argparse.ArgumentParser, *, sampler: bool = True) -> None:
    """Options for a :class:`PipelineConfig`: encoder, window, sampler and policy settings."""
    add_options(p, EncoderSpec, prefix="encoder_", rename={"name": "encoder"})
    add_options(p, StreamConfig, prefix="stream_")
    if sampler:
        add_options(p, SamplerConfig, prefix="sampler_")
        p.add_argument("--no-sampler", action="store_true", help="process every frame")
    add_options(p, PolicySpec, prefix="policy_", rename={"name": "policy"})


def pipeline_config_from(args: argparse.Namespace) -> PipelineConfig:
    """The :class:`PipelineConfig` the options of :func:`add_pipeline_options` describe."""
    use_sampler = hasattr(args, "sampler_min_fps") and not args.no_sampler
    return PipelineConfig(
        encoder=from_options(EncoderSpec, args, prefix="encoder_"),
        stream=from_options(StreamConfig, args, prefix="stream_"),
        sampler=from_options(SamplerConfig, args, prefix="sampler_") if use_sampler else None,
        policy=from_options(PolicySpec, args, prefix="policy_"),
    )


def cmd_compress(args: argparse.Namespace) -> int:
    from .compress import compress_video

    report = compress_video(args.video, pipeline_config_from(args), progress=not args.quiet,
                            max_frames=args.max_frames, measure_skipped=args.measure_skipped)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamdycoke", description="Streaming visual-token compression for video LLMs")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="compress a video file or URL and report keep ratio and fidelity")
    p.add_argument("video")
    add_pipeline_options(p)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--measure-skipped", action="store_true",
                   help="also encode the frames the sampler skips, for the measurement only: fidelity over every frame in")
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

    from .bench import add_bench_parser
    from .evalqa.run import add_eval_parser
    from .evalqa.task_policy import cmd_train_policy_task
    from .train import add_train_parser

    add_train_parser(sub, task_objective=cmd_train_policy_task)
    add_eval_parser(sub)
    bench = add_bench_parser(sub)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register = ep.load()
        except ModuleNotFoundError as exc:  # its package is not shipped here (the image has no tools/)
            if (exc.name or "").split(".")[0] == ep.module.split(".")[0]:
                continue
            raise
        register(sub, bench)
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
