"""WavLM baseline (Odyssey 2024 SER challenge baseline; Crab paper section IV-1): SSL frames ->
attentive statistics pooling -> classification head. Speech only.

The challenge baseline fine-tunes WavLM-Large and reads its last layer; here the encoder is
whatever ``speech`` is (frozen features, or fine-tuned with ``train.finetune``). The head's
details are our reading of the baseline: a linear projection of the frames to ``hidden`` with
LayerNorm (so a 1024-d WavLM and a 384-d Whisper give heads of one size), attentive statistics
pooling (Okabe et al. 2018), then the same LayerNorm -> FC -> ReLU -> Dropout -> FC head as Crab.
Taps: ``speech_pooled`` (the pooled statistics) and ``fused`` (the head's first layer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from crabser.models.base import ModelOutput, SERModel
from crabser.models.blocks import (
    AttentiveStatisticsPooling,
    ClassifierHead,
    ModalityProjection,
)


class WavLMBaseline(SERModel):
    """Attentive statistics pooling over one modality's frames, then a classification head."""

    def __init__(
        self,
        input_dims: Mapping[str, int],
        num_classes: int,
        **common: Any,
    ) -> None:
        """``common``: the :class:`~crabser.models.base.SERModel` arguments."""
        if list(input_dims) != ["speech"]:
            raise ValueError(
                "the WavLM baseline is speech only (model.modalities: [speech]), got "
                f"{list(input_dims)}"
            )
        super().__init__(input_dims, num_classes, **common)
        hidden, dropout = self.hidden, self.dropout
        self.projection = ModalityProjection(input_dims["speech"], hidden)
        self.pooling = AttentiveStatisticsPooling(hidden)
        self.classifier = ClassifierHead(2 * hidden, hidden, num_classes, dropout)

    def tap_dims(self) -> dict[str, int]:
        """Width of each tap point."""
        return {"speech_pooled": 2 * self.hidden, "fused": self.hidden}

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        return_taps: bool = False,
    ) -> ModelOutput:
        inputs, frame_masks = self.input_stage(features, masks)
        pooled = self.pooling(self.projection(inputs["speech"]), frame_masks["speech"])  # (B, 2h)
        logits, fused = self.classifier(pooled)
        return ModelOutput(logits, {"speech_pooled": pooled, "fused": fused} if return_taps else {})
