"""The contract every SER model of crabser keeps (:mod:`crabser.models.registry` builds them by
name):

- it is built from the per-modality input widths, the class count and the ``model`` settings
  (:meth:`SERModel.from_config` hands it the settings its constructor names);
- its inputs pass through :attr:`SERModel.input_stage` (normalisers set from the training split, the
  weighted sum of encoder layers, frame strides, training-time masking);
- :meth:`SERModel.tap_dims` names the points where supervision legs may attach, with their widths
  (``fused``, the classifier's first layer, in every model);
- ``forward(features, masks, return_taps)`` returns a :class:`ModelOutput`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from crabser.config import ModelConfig, saved_section
from crabser.models.blocks import InputStage

#: constructor arguments every model takes, filled from the settings by from_config
COMMON = ("input_dims", "num_classes", "speech_layers", "frame_strides", "hidden", "dropout")


@dataclass
class ModelOutput:
    """Logits and, when asked for, the tap points (name -> ``(B, dim)``) where supervision legs
    attach. ``mixup`` is set by a model that mixed its batch internally
    (:class:`crabser.models.baselines.medusa.Medusa`): the permutation and weight the objective
    mixes the labels with. ``frames`` are frame-level embeddings ``(B, T, e)`` and their mask, for
    frame-level losses (:mod:`crabser.models.mll`)."""

    logits: torch.Tensor
    taps: dict[str, torch.Tensor] = field(default_factory=dict)
    mixup: tuple[torch.Tensor, float] | None = None
    frames: tuple[torch.Tensor, torch.Tensor] | None = None


class SERModel(nn.Module):
    """Base of the models: keeps ``modalities``, ``hidden``, ``dropout`` and the input stage."""

    def __init__(
        self,
        input_dims: Mapping[str, int],
        num_classes: int,
        *,
        speech_layers: int = 0,
        frame_strides: Mapping[str, int] | None = None,
        hidden: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.modalities: tuple[str, ...] = tuple(input_dims)
        self.num_classes = num_classes
        self.hidden = hidden
        self.dropout = dropout
        self.input_stage = InputStage(dict(input_dims), speech_layers, dict(frame_strides or {}))

    @classmethod
    def from_config(
        cls,
        settings: ModelConfig | Mapping[str, Any],
        input_dims: Mapping[str, int],
        num_classes: int,
        speech_layers: int = 0,
    ) -> SERModel:
        """The model over these inputs with the ``model`` settings (a ``ModelConfig`` or a saved
        dump of one, completed by :func:`crabser.config.saved_section`): the common ones and
        those the subclass's constructor names."""
        model: ModelConfig = (
            settings if isinstance(settings, ModelConfig) else saved_section("model", settings)
        )
        strides = {
            "speech": model.speech_frame_stride,
            "paralinguistic": model.paralinguistic_frame_stride,
        }
        own = {
            name: getattr(model, name)
            for name in inspect.signature(cls.__init__).parameters
            if name not in (*COMMON, "self") and name in ModelConfig.model_fields
        }
        return cls(
            input_dims,
            num_classes,
            hidden=model.hidden,
            dropout=model.dropout,
            speech_layers=speech_layers,
            frame_strides=strides,
            **own,
        )

    def tap_dims(self) -> dict[str, int]:
        """Width of each tap point; a subclass's ``forward(features, masks, return_taps=False)``
        returns a :class:`ModelOutput` with these taps when asked."""
        raise NotImplementedError
