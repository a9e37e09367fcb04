"""Models by name (``model.name``): Crab, the systems it is compared with, and the multi-loss model.

Every model takes the per-modality input widths and the class count, exposes ``modalities``,
``input_stage`` (normalisers set from the training split), ``tap_dims()`` (where supervision legs
may attach; ``fused`` is the classifier's first layer in all of them) and returns
:class:`crabser.models.crab.CrabOutput`.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from crabser.models.baselines.focalser import FocalSER
from crabser.models.baselines.medusa import Medusa
from crabser.models.baselines.memocmt import MemoCMT
from crabser.models.baselines.wavlm_baseline import WavLMBaseline
from crabser.models.blocks import InputMasking
from crabser.models.crab import Crab
from crabser.models.mll import MultiLossSER

MODELS = ("crab", "wavlm_baseline", "focalser", "memocmt", "medusa", "mll")


def _build(
    config: Mapping, input_dims: Mapping[str, int], num_classes: int, speech_layers: int
) -> nn.Module:
    name = config["name"]
    strides = {
        "speech": config["speech_frame_stride"],
        "paralinguistic": config["paralinguistic_frame_stride"],
    }
    common = {
        "hidden": config["hidden"],
        "dropout": config["dropout"],
        "speech_layers": speech_layers,
        "frame_strides": strides,
    }
    if config.get("mixup_alpha", 0.0) > 0 and name != "medusa":
        raise ValueError(
            f"model.mixup_alpha is a Medusa setting; model {name!r} does not mix its batches"
        )
    if name == "crab":
        return Crab(
            input_dims,
            num_classes,
            heads=config["heads"],
            attention_dropout=config["attention_dropout"],
            unimodal_leg_input=config["unimodal_leg_input"],
            **common,
        )
    if name == "wavlm_baseline":
        return WavLMBaseline(input_dims, num_classes, **common)
    if name == "focalser":
        return FocalSER(
            input_dims,
            num_classes,
            heads=config["heads"],
            attention_dropout=config["attention_dropout"],
            **common,
        )
    if name == "memocmt":
        return MemoCMT(
            input_dims,
            num_classes,
            heads=config["heads"],
            attention_dropout=config["attention_dropout"],
            aggregation=config["aggregation"],
            **common,
        )
    if name == "medusa":
        return Medusa(input_dims, num_classes, mixup_alpha=config["mixup_alpha"], **common)
    if name == "mll":
        return MultiLossSER(
            input_dims,
            num_classes,
            heads=config["heads"],
            attention_dropout=config["attention_dropout"],
            embedding_dim=config["embedding_dim"],
            **common,
        )
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def build_model(
    config: Mapping, input_dims: Mapping[str, int], num_classes: int, speech_layers: int = 0
) -> nn.Module:
    """The model named by ``config["name"]`` (a ``ModelConfig`` dump) over these inputs, with the
    training-time masking of its speech frames that ``config`` asks for (none in runs saved before
    the setting existed)."""
    model = _build(config, input_dims, num_classes, speech_layers)
    model.input_stage.masking = InputMasking(
        config.get("mask_time", 0.0), config.get("mask_features", 0.0), config.get("mask_span", 5)
    )
    return model
