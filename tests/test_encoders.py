import numpy as np
import pytest

from streamdycoke.encoders import get_encoder

from .conftest import rgb


def test_pixel_encoder_shapes_and_still_frames_compare_equal():
    enc = get_encoder("pixels")
    x = enc.encode(np.stack([rgb(240, 320, seed=0), rgb(240, 320, seed=0)]))
    assert x.shape == (2, 196, enc.dim) and enc.grid == (14, 14)
    assert np.allclose(x[0].numpy(), x[1].numpy())


def test_llava_onevision_tiny_config_warns_and_gives_pooled_grid():
    with pytest.warns(UserWarning, match="TINY RANDOM"):
        enc = get_encoder("llava-onevision", model=None)
    x = enc.encode(np.stack([rgb(100, 120, seed=i) for i in range(3)]))
    assert enc.grid == (4, 4) and x.shape == (3, 16, 128)  # 8x8 patches pooled 2x2


def test_llava_onevision_missing_weights_fall_back_with_warning():
    with pytest.warns(UserWarning, match="no local weights"):
        get_encoder("llava-onevision", model="/nonexistent/checkpoint")


def test_encoders_reject_bad_frames():
    enc = get_encoder("pixels")
    with pytest.raises(ValueError, match="uint8"):
        enc.encode(np.zeros((1, 32, 32, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="unknown encoder"):
        get_encoder("clip")
