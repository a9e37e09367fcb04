"""Models by name (``model.name``): Crab, the systems it is compared with, and the multi-loss model.

Every model keeps the contract of :class:`crabser.models.base.SERModel` and is built by its
``from_config``. A new model is one module with a :class:`~crabser.models.base.SERModel` subclass
and one line in :data:`MODELS` (and its name in ``ModelConfig.name``); docs/architecture.md shows
how.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crabser.config import ModelConfig, saved_section
from crabser.models.base import SERModel
from crabser.models.baselines.focalser import FocalSER
from crabser.models.baselines.medusa import Medusa
from crabser.models.baselines.memocmt import MemoCMT
from crabser.models.baselines.wavlm_baseline import WavLMBaseline
from crabser.models.blocks import InputMasking
from crabser.models.crab import Crab
from crabser.models.mll import MultiLossSER

MODELS: dict[str, type[SERModel]] = {
    "crab": Crab,
    "wavlm_baseline": WavLMBaseline,
    "focalser": FocalSER,
    "memocmt": MemoCMT,
    "medusa": Medusa,
    "mll": MultiLossSER,
}


def build_model(
    config: ModelConfig | Mapping[str, Any],
    input_dims: Mapping[str, int],
    num_classes: int,
    speech_layers: int = 0,
) -> SERModel:
    """The model named by the ``model`` settings (a ``ModelConfig``, or a saved dump of one,
    completed by :func:`crabser.config.saved_section`) over these inputs, with the training-time
    masking of its speech frames the settings ask for."""
    settings = config if isinstance(config, ModelConfig) else saved_section("model", config)
    if settings.name not in MODELS:
        raise ValueError(f"unknown model {settings.name!r}; known: {', '.join(MODELS)}")
    if settings.mixup_alpha > 0 and settings.name != "medusa":
        raise ValueError(
            f"model.mixup_alpha is a Medusa setting; model {settings.name!r} does not mix its "
            "batches"
        )
    model = MODELS[settings.name].from_config(settings, input_dims, num_classes, speech_layers)
    model.input_stage.masking = InputMasking(
        settings.mask_time, settings.mask_features, settings.mask_span
    )
    return model
