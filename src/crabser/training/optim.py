"""Hierarchical learning rates and the schedules (cosine; exponential for the multi-loss recipe).

The head (Crab and its legs) and the pre-trained encoders get separate AdamW parameter groups
(paper: head 1e-5, encoders 1e-6). The cosine decay is one multiplicative factor applied to every
group, stepped per epoch, down to ``min_lr_ratio`` of each group's peak (reference: 1e-6 / 1e-7),
so the ratio between the groups holds throughout.

``warmup_steps`` (not in the paper or the reference code, which use none) raises every group's LR
linearly from its first optimizer step to the full value at that step; the schedule is then stepped
per optimizer step, with the per-epoch factor of the epoch the step falls in, so after the warmup
the LRs are those of the per-epoch schedule. Fine-tuning an encoder at a higher LR than the paper's
(the CPU recipes) may need it; 0 keeps the per-epoch schedule exactly as it was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def parameter_groups(
    head: Iterable[nn.Parameter],
    encoders: Iterable[nn.Parameter],
    lr_head: float,
    lr_encoder: float,
) -> list[dict[str, Any]]:
    """AdamW parameter groups; an empty encoder group (frozen mode) is dropped."""
    groups = [{"params": [p for p in head if p.requires_grad], "lr": lr_head, "name": "head"}]
    encoder_params = [p for p in encoders if p.requires_grad]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": lr_encoder, "name": "encoders"})
    return groups


def cosine_factor(epoch: int, total_epochs: int, min_ratio: float) -> float:
    """Cosine annealing factor from 1 at epoch 0 down to ``min_ratio`` at ``total_epochs``."""
    progress = min(epoch, total_epochs) / max(1, total_epochs)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def fusable(groups: list[dict[str, Any]]) -> bool:
    """Whether PyTorch's fused Adam(W) kernel can step these parameters (floating point, on the CPU
    or a CUDA device). On a CPU it steps all tensors in one kernel instead of a Python loop over
    them: 2.6x faster steps, about 6 % of a Crab training step (BENCHMARKS.md, speed)."""
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )


def build_optimizer(
    groups: list[dict[str, Any]],
    weight_decay: float,
    total_epochs: int,
    min_lr_ratio: float,
    optimizer: str = "adamw",
    schedule: str = "cosine",
    lr_decay: float = 0.875,
    warmup_steps: int = 0,
    steps_per_epoch: int = 1,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, str]:
    """AdamW (Crab) or Adam without weight decay (multi-loss), with one per-epoch schedule shared by
    every group: cosine down to ``min_lr_ratio``, or exponential decay by ``lr_decay`` per epoch
    (multi-loss learning: 7/8 per epoch until the 20th), after a linear warmup over
    ``warmup_steps`` optimizer steps (``steps_per_epoch`` of them per epoch). Fused kernels where
    :func:`fusable`. Returns the optimizer, the scheduler and how often to step it ("epoch" or
    "step")."""
    fused = fusable(groups)
    if optimizer == "adam":
        built = torch.optim.Adam(groups, fused=fused or None)
    else:
        built = torch.optim.AdamW(groups, weight_decay=weight_decay, fused=fused or None)

    def factor(epoch: int) -> float:
        if schedule == "exponential":
            return float(lr_decay ** min(epoch, total_epochs))
        return cosine_factor(epoch, total_epochs, min_lr_ratio)

    if not warmup_steps:
        return built, torch.optim.lr_scheduler.LambdaLR(built, factor), "epoch"
    per_epoch = max(1, steps_per_epoch)

    def warmed(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) * factor(step // per_epoch)

    return built, torch.optim.lr_scheduler.LambdaLR(built, warmed), "step"
