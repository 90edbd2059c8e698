"""A camera's encoding setting (actors.config.EncodingSettings): where its frames are encoded and whether
differentially; what a camera asks that cannot run is refused at load or when it is added."""

import pytest

from actors.config import CameraConfig, KafkaSettings, RedisSettings
from actors.supervisor import CameraRefused, CameraSupervisor
from streamdycoke import EncoderSpec
from streamdycoke.encoders.differential import DifferentialConfig


def test_differential_encoding_reaches_the_cameras_pipeline_config():
    cam = CameraConfig.model_validate({"id": "c", "encoding": {"differential": {"threshold": 0.03}}})
    assert cam.pipeline_config(EncoderSpec(weights=None)).differential == DifferentialConfig(threshold=0.03)
    assert CameraConfig(id="d").pipeline_config().differential is None  # off unless asked for


def test_differential_encoding_of_a_tower_without_it_is_refused_at_load():
    with pytest.raises(ValueError, match="differential"):
        CameraConfig.model_validate({"id": "c", "encoder": {"name": "pixels"}, "encoding": {"differential": {}}})


def test_a_camera_asking_for_the_encoder_service_where_none_runs_is_refused():
    sup = CameraSupervisor(KafkaSettings(), RedisSettings(), EncoderSpec(weights=None))
    with pytest.raises(CameraRefused, match="encoder service"):
        sup.add(CameraConfig.model_validate({"id": "c", "encoding": {"at": "service"}}))
