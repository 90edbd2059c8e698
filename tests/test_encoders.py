import numpy as np
import pytest

from streamdycoke.encoders import EncoderSpec, build_encoder, encoder_shape

from .conftest import rgb


def test_pixel_encoder_shapes_and_still_frames_compare_equal():
    enc = build_encoder(EncoderSpec("pixels"))
    x = enc.encode(np.stack([rgb(240, 320, seed=0), rgb(240, 320, seed=0)]))
    assert x.shape == (2, 196, enc.dim) and enc.grid == (14, 14)
    assert np.allclose(x[0].numpy(), x[1].numpy())


def test_llava_onevision_tiny_config_warns_and_gives_pooled_grid():
    with pytest.warns(UserWarning, match="TINY RANDOM"):
        enc = build_encoder(EncoderSpec(weights=None))
    x = enc.encode(np.stack([rgb(100, 120, seed=i) for i in range(3)]))
    assert enc.grid == (4, 4) and x.shape == (3, 16, 128)  # 8x8 patches pooled 2x2


@pytest.mark.parametrize("spec", [EncoderSpec("pixels"), EncoderSpec(weights=None), EncoderSpec()])
def test_encoder_shape_from_configuration_matches_the_loaded_encoder(spec):
    """What callers check an encoder against an LLM with, without loading weights, is what it produces."""
    shape = encoder_shape(spec)
    with pytest.warns(UserWarning) if spec.name != "pixels" else _no_warning():
        enc = build_encoder(spec)
    assert (shape.grid, shape.dim, shape.input_size) == (enc.grid, enc.dim, enc.input_size)


def test_the_tiny_model_is_the_same_in_every_process_and_leaves_the_caller_rng_alone():
    import torch

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    with pytest.warns(UserWarning):
        a = build_encoder(EncoderSpec(weights=None))
    after = torch.rand(3)
    assert torch.equal(before, after)  # loading drew nothing from the global generator
    with pytest.warns(UserWarning):
        b = build_encoder(EncoderSpec(weights=None))
    frames = np.stack([rgb(64, 64, seed=1)])
    assert torch.equal(a.encode(frames), b.encode(frames))


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


def test_llava_onevision_missing_weights_fall_back_with_warning():
    with pytest.warns(UserWarning, match="no local weights"):
        build_encoder(EncoderSpec(weights="/nonexistent/checkpoint"))


def test_encoders_reject_bad_frames():
    enc = build_encoder(EncoderSpec("pixels"))
    with pytest.raises(ValueError, match="uint8"):
        enc.encode(np.zeros((1, 32, 32, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="unknown encoder"):
        EncoderSpec("clip")
    with pytest.raises(ValueError, match="dtype"):
        EncoderSpec(dtype="int8")


def test_hub_weights_load_at_a_pinned_revision_and_a_path_or_other_weights_do_not_inherit_it(monkeypatch):
    """The default checkpoint is named by hub id: it is loaded at its pinned commit; the pin is not carried
    over to other weights, and a config may pin its own."""
    from transformers import LlavaOnevisionConfig

    from streamdycoke import EncoderSpec
    from streamdycoke.encoders import encoder_shape
    from streamdycoke.encoders.llava import DEFAULT_MODEL, DEFAULT_REVISION

    assert EncoderSpec().weights == DEFAULT_MODEL and EncoderSpec().revision == DEFAULT_REVISION
    assert EncoderSpec(weights="/models/llava").revision is None
    assert EncoderSpec(weights="org/other", revision="v1.0").revision == "v1.0"
    with pytest.raises(ValueError, match="revision"):
        EncoderSpec(revision=" ")
    asked = []

    def from_pretrained(model, **kw):
        asked.append((model, kw.get("revision"), kw.get("local_files_only")))
        raise OSError("not cached here")

    monkeypatch.setattr(LlavaOnevisionConfig, "from_pretrained", from_pretrained)
    encoder_shape(EncoderSpec())
    encoder_shape(EncoderSpec(weights="org/other", revision="v1.0"))
    assert asked == [(DEFAULT_MODEL, DEFAULT_REVISION, True), ("org/other", "v1.0", True)]
