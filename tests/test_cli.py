import json

import pytest

from streamdycoke.cli import main
from streamdycoke.video import make_camera_video


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    return make_camera_video(tmp_path_factory.mktemp("v") / "cam.mp4", seconds=6, seed=7)


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_compress_json_contract_and_default_keeps_at_most_40_percent(camera, capsys):
    assert main(["compress", str(camera), "--encoder", "pixels", "--json", "-q"]) == 0
    r = last_json(capsys)
    for key in ("frames_in", "frames_processed", "tokens_in", "tokens_kept", "keep_ratio", "fidelity", "compress_fps"):
        assert key in r
    assert r["frames_in"] == 180 and 0 < r["frames_processed"] <= r["frames_in"]
    assert r["tokens_in"] == r["frames_in"] * r["tokens_per_frame"]
    assert r["keep_ratio"] == pytest.approx(r["tokens_kept"] / r["tokens_in"])
    assert r["keep_ratio"] <= 0.40
    assert 0.9 < r["fidelity"] <= 1.0


def test_compress_measures_every_frame_in_when_asked(camera, capsys):
    """Fidelity over processed frames cannot see what skipping lost; --measure-skipped covers every frame in
    (equal to it when nothing is skipped)."""
    assert main(["compress", str(camera), "--encoder", "pixels", "--json", "-q", "--measure-skipped"]) == 0
    r = last_json(capsys)
    assert r["frames_processed"] < r["frames_in"]
    assert 0.5 < r["fidelity_all_frames"] < r["fidelity"]
    assert main(["compress", str(camera), "--encoder", "pixels", "--json", "-q", "--measure-skipped", "--no-sampler"]) == 0
    r = last_json(capsys)
    assert r["fidelity_all_frames"] == pytest.approx(r["fidelity"])
    assert main(["compress", str(camera), "--encoder", "pixels", "--json", "-q"]) == 0
    assert last_json(capsys)["fidelity_all_frames"] is None  # not measured unless asked: it costs an encode per frame


def test_compress_without_sampler_with_fixed_policy_one_is_lossless(camera, capsys):
    assert main(["compress", str(camera), "--encoder", "pixels", "--json", "-q", "--no-sampler", "--policy", "fixed:1.0",
                 "--max-frames", "30"]) == 0
    r = last_json(capsys)
    assert r["frames_processed"] == r["frames_in"] == 30
    assert r["keep_ratio"] == 1.0 and r["fidelity"] == pytest.approx(1.0, abs=1e-4)


def test_compress_with_the_shipped_policy_net(camera, capsys):
    assert main(["compress", str(camera), "--encoder", "pixels", "--json", "-q", "--policy", "net",
                 "--target-keep-ratio", "0.2"]) == 0
    r = last_json(capsys)
    assert r["policy"] == "net" and 0 < r["keep_ratio"] <= 0.4


def test_compress_reports_clear_errors(tmp_path, capsys):
    assert main(["compress", str(tmp_path / "missing.mp4"), "-q"]) == 2
    assert "error" in capsys.readouterr().err
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    assert main(["compress", str(bad), "-q"]) == 2
    assert main(["compress", str(bad), "-q", "--policy", "bogus"]) == 2
    assert main(["compress", str(bad), "-q", "--policy", "threshold", "--target-keep-ratio", "0.2"]) == 2
    assert "PolicyNet" in capsys.readouterr().err


def _commands(parser):
    """(command path, its parser) for every command and subcommand of ``streamdycoke``."""
    import argparse

    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((name, sub))
                out += [(f"{name} {n}", p) for n, p in _commands(sub)]
    return out


def test_every_cli_default_is_the_configuration_default():
    """No option repeats a default: an option that sets a configuration field defaults to that field's
    default, in every command (pipeline commands included)."""
    from actors.config import IngestSettings, KafkaSettings
    from streamdycoke import EncoderSpec, PolicySpec, SamplerConfig, StreamConfig
    from streamdycoke.cli import build_parser
    from streamdycoke.config import field_defaults

    owners = {"encoder_": EncoderSpec, "model_": EncoderSpec, "stream_": StreamConfig, "sampler_": SamplerConfig,
              "policy_": PolicySpec, "kafka_": KafkaSettings, "ingest_": IngestSettings}
    commands = dict(_commands(build_parser()))
    assert {"compress", "train-policy", "ingest", "demo", "run", "bench compress", "bench prefill",
            "bench pipeline", "bench decode"} <= set(commands)
    checked = 0
    for name, parser in commands.items():
        for action in parser._actions:
            prefix = next((p for p in owners if action.dest.startswith(p)), None)
            if prefix is None:
                continue
            defaults = field_defaults(owners[prefix])
            field = action.dest[len(prefix):]
            assert field in defaults, f"{name}: {action.option_strings} sets no field of {owners[prefix].__name__}"
            assert action.default == defaults[field], f"{name} {action.option_strings}: {action.default!r} != {defaults[field]!r}"
            checked += 1
    assert checked > 30
    # and the window, the fps bounds and the model have one literal each in the code
    for cmd in ("compress", "train-policy"):
        args = commands[cmd].parse_args(["v.mp4"] if cmd == "compress" else [])
        assert args.stream_window == StreamConfig().window and args.encoder_weights == EncoderSpec().weights


def test_compress_builds_the_pipeline_config_the_options_describe(camera):
    from streamdycoke import EncoderSpec, PipelineConfig, PolicySpec, SamplerConfig, StreamConfig
    from streamdycoke.cli import build_parser, pipeline_config_from

    p = build_parser()
    assert pipeline_config_from(p.parse_args(["compress", "v.mp4"])) == PipelineConfig()
    cfg = pipeline_config_from(p.parse_args(["compress", "v.mp4", "--encoder", "pixels", "--window", "8", "--max-fps",
                                             "5", "--policy", "net", "--target-keep-ratio", "0.2", "--max-keep-ratio",
                                             "0.5"]))
    assert cfg == PipelineConfig(EncoderSpec("pixels"), StreamConfig(window=8), SamplerConfig(max_fps=5.0),
                                 PolicySpec("net", 0.2, 0.5))
    assert pipeline_config_from(p.parse_args(["compress", "v.mp4", "--no-sampler"])).sampler is None


def test_train_policy_on_the_qa_objective_is_dispatched_to_the_benchmark_and_needs_an_answerer(tmp_path, capsys):
    from streamdycoke.cli import main

    missing = tmp_path / "no_answerer.pt"
    assert main(["train-policy", "--objective", "qa", "--answerer", str(missing), "-q"]) == 2
    assert f"{missing} does not exist" in capsys.readouterr().err
