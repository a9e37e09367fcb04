"""Crab: a cross-modal transformer head over frame/token sequences (paper III-B).

Reads top-down like the paper's figure 1, for the bimodal case (speech ``S``, text ``T``)::

    speech (B, Fs, Ds) --FC+LN--> (B, Fs, h) --biGRU--> S (B, Fs, 2h)
    text   (B, L, Dt)  --FC+LN--> (B, L, h)  --biGRU--> T (B, L, 2h)
    S' = S + Attn(q=S, kv=T)      T' = T + Attn(q=T, kv=S)        (one head each, residual)
    C  = [AttnPool(S') ; AttnPool(T')]                            (B, 4h)
    logits = FC(ReLU(FC(LayerNorm(C))))                           (B, classes)

``input_statistics=True`` (not in the paper) appends to ``C`` the mean and std over time of each
modality's normalised input frames, ``(B, 2 D_m)`` each: the features a linear probe reads, so the
head can be at least as good as the probe on small corpora where the sequence path overfits.

The modalities are a parameter: ``("speech",)`` or ``("text",)`` is the paper's unimodal variant
(cross-modal block removed, legs at the same places), ``("speech", "text", "paralinguistic")`` a
trimodal one. With three or more modalities each sequence adds one cross-attention per other
modality to its residual (``S' = S + sum_n Attn(q=S, kv=n)``) — our choice, the papers describe two.

``forward(..., return_taps=True)`` also returns the representations where MLCS attaches its
Contrastive Supervision Legs (``<modality>_unimodal``, ``<modality>_pooled``, ``fused``); the legs
live in the training objective (:class:`crabser.training.objective.TrainingObjective`), so a trained
Crab has no leg parameters and no leg cost at inference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from crabser.models.base import ModelOutput, SERModel
from crabser.models.blocks import (
    AttentionPooling,
    BiGRU,
    ClassifierHead,
    CrossModalAttention,
    ModalityProjection,
    masked_mean,
    masked_mean_std,
)

MODALITIES = ("speech", "text", "paralinguistic")
TAP_NAMES = ("speech_unimodal", "text_unimodal", "speech_pooled", "text_pooled", "fused")  # bimodal


def tap_names(modalities: Sequence[str]) -> tuple[str, ...]:
    """MLCS tap points of a model over these modalities (five for the bimodal paper model)."""
    return (*(f"{m}_unimodal" for m in modalities), *(f"{m}_pooled" for m in modalities), "fused")


class Crab(SERModel):
    """The Crab head.

    ``input_dims`` maps each modality (in order) to its feature width. ``speech_layers`` > 0 adds
    a learnable weighted sum over encoder layers (speech input ``(B, Fs, L, Ds)``).
    ``frame_strides`` averages runs of frames of a modality before its projection (not in the
    paper, which runs the bi-GRU at the encoder's 50 Hz; a CPU budget option, 1 = the paper).
    Inputs pass through :class:`InputStage` normalisers (identity until training sets them to
    the training split's mean/std, as the reference code does; padded positions stay masked).
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        num_classes: int,
        heads: int = 1,
        attention_dropout: float = 0.5,
        unimodal_leg_input: str = "gru",
        input_statistics: bool = False,
        **common: Any,
    ) -> None:
        """``common``: the :class:`~crabser.models.base.SERModel` arguments (hidden, dropout,
        speech_layers, frame_strides)."""
        unknown = set(input_dims) - set(MODALITIES)
        if unknown or not input_dims:
            raise ValueError(
                f"modalities must be a non-empty subset of {MODALITIES}, got {list(input_dims)}"
            )
        super().__init__(input_dims, num_classes, **common)
        hidden, dropout = self.hidden, self.dropout
        self.unimodal_leg_input = unimodal_leg_input
        self.input_statistics = input_statistics
        # unimodal block
        self.projections = nn.ModuleDict(
            {m: ModalityProjection(d, hidden) for m, d in input_dims.items()}
        )
        self.grus = nn.ModuleDict({m: BiGRU(hidden) for m in self.modalities})
        # cross-modal block: "<query>_to_<context>"
        self.cross = nn.ModuleDict(
            {
                f"{m}_to_{n}": CrossModalAttention(2 * hidden, heads, attention_dropout)
                for m in self.modalities
                for n in self.modalities
                if m != n
            }
        )
        self.poolings = nn.ModuleDict({m: AttentionPooling(2 * hidden) for m in self.modalities})
        # classifier block
        statistics_dim = sum(2 * d for d in input_dims.values()) if input_statistics else 0
        self.classifier = ClassifierHead(
            2 * hidden * len(self.modalities) + statistics_dim, hidden, num_classes, dropout
        )

    def tap_dims(self) -> dict[str, int]:
        """Width of each MLCS tap point."""
        unimodal = 2 * self.hidden if self.unimodal_leg_input == "gru" else self.hidden
        dims = {f"{m}_unimodal": unimodal for m in self.modalities}
        dims.update({f"{m}_pooled": 2 * self.hidden for m in self.modalities})
        dims["fused"] = self.hidden
        return dims

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        return_taps: bool = False,
    ) -> ModelOutput:
        """``features[m]`` ``(B, T_m, D_m)`` with ``masks[m]`` ``(B, T_m)`` (True = real) per
        modality."""
        inputs, frame_masks = self.input_stage(features, masks)
        projected, sequences = {}, {}
        for m in self.modalities:
            projected[m] = self.projections[m](inputs[m])  # (B, T_m, h)
            sequences[m] = self.grus[m](projected[m], frame_masks[m])  # (B, T_m, 2h)

        pooled = {}
        for m in self.modalities:
            crossed = sequences[m]
            for n in self.modalities:
                if n != m:
                    crossed = crossed + self.cross[f"{m}_to_{n}"](
                        sequences[m], sequences[n], frame_masks[n]
                    )
            pooled[m] = self.poolings[m](crossed, frame_masks[m])  # (B, 2h)

        parts = [pooled[m] for m in self.modalities]
        if self.input_statistics:
            parts += [masked_mean_std(inputs[m], frame_masks[m]) for m in self.modalities]
        logits, fused = self.classifier(torch.cat(parts, dim=-1))  # (B, classes), (B, h)
        if not return_taps:
            return ModelOutput(logits)
        unimodal = sequences if self.unimodal_leg_input == "gru" else projected
        taps = {f"{m}_unimodal": masked_mean(unimodal[m], frame_masks[m]) for m in self.modalities}
        taps.update({f"{m}_pooled": pooled[m] for m in self.modalities})
        taps["fused"] = fused
        return ModelOutput(logits, taps)
