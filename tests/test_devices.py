"""Where the work runs: train.accelerator puts frozen extraction where it puts training; a model
trained on a GPU still predicts on a machine without one."""

from __future__ import annotations

import logging

import pytest

from crabser import devices
from crabser.config import RunConfig
from crabser.errors import ConfigError


@pytest.mark.parametrize(
    ("accelerator", "cuda", "device"),
    [
        ("cpu", False, "cpu"),
        ("cpu", True, "cpu"),
        ("auto", False, "cpu"),
        ("auto", True, "cuda"),
        ("gpu", True, "cuda"),
        ("CUDA", True, "cuda"),
    ],
)
def test_extraction_runs_where_the_accelerator_says(accelerator, cuda, device):
    assert devices.extraction_device(accelerator, cuda_available=cuda) == device


def test_extraction_on_a_gpu_that_is_not_there_is_a_config_error():
    with pytest.raises(ConfigError, match="train.accelerator=gpu: no CUDA GPU"):
        devices.extraction_device("gpu", cuda_available=False)


def test_frozen_encoders_are_built_on_the_extraction_device(monkeypatch):
    """The device extraction_device names reaches the model ("meta": a device every torch has)."""
    from crabser.features.encoders import build_encoders

    asked = []

    def meta(accelerator: str) -> str:
        asked.append(accelerator)
        return "meta"

    monkeypatch.setattr(devices, "extraction_device", meta)
    config = RunConfig.model_validate(
        {"name": "t", "model": {"modalities": ["text"]}, "train": {"accelerator": "auto"}}
    )
    text = build_encoders(config)["text"]
    assert asked == ["auto"]
    assert next(text.model.parameters()).device.type == "meta"
    assert next(build_encoders(config, "cpu")["text"].model.parameters()).device.type == "cpu"


def test_ctranslate2_whisper_without_cuda_falls_back_to_the_cpu(caplog):
    import ctranslate2

    from crabser.features.encoders import WhisperCT2Encoder

    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("CTranslate2 sees a CUDA GPU here: there is nothing to fall back from")
    with caplog.at_level(logging.WARNING, logger="crabser.features.encoders"):
        encoder = WhisperCT2Encoder(device="cuda")
    assert encoder.model.device == "cpu"
    assert "sees no CUDA GPU" in caplog.text


def test_a_model_trained_on_a_gpu_predicts_on_the_cpu(monkeypatch, emodb):
    """Its config says train.accelerator: gpu; prediction builds its encoders on the CPU."""
    from crabser.inference import Recognizer

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    recognizer = Recognizer.load("crabser/emodb_speech", overrides=["train.accelerator=gpu"])
    from crabser.data.corpora import emodb as emodb_adapter

    clip = emodb_adapter.prepare(emodb).frame["audio"].iloc[0]
    assert recognizer.predict(clip).label in recognizer.labels
