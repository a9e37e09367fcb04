"""The one evaluation loop: a trained module's outputs on a split through Lightning's
``predict_step``, so ``train.accelerator`` and ``train.precision`` apply to evaluation as to
training. :func:`crabser.pipeline.evaluate`, the stacking of base models and the embedding maps all
read their logits and taps from here.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch

from crabser.config import RunConfig, TrainConfig
from crabser.data.manifest import Manifest
from crabser.features.encoders import Encoder
from crabser.training.loaders import split_loader

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from crabser.training.lit_module import CrabLitModule


@dataclass
class Predictions:
    """A module's outputs on a set of utterances, in loader order, on the CPU in float32."""

    ids: list[str]
    logits: torch.Tensor  #: (utterances, classes)
    labels: torch.Tensor  #: (utterances,) the true class indices
    taps: dict[str, torch.Tensor] = field(default_factory=dict)  #: tap name -> (utterances, dim)

    @property
    def predicted(self) -> torch.Tensor:
        """The arg-max class of each utterance."""
        return self.logits.argmax(dim=-1)


def evaluation_device(settings: TrainConfig) -> tuple[str, list[int] | int, str]:
    """Where and how a run is evaluated: accelerator, devices and precision.

    A GPU where ``train.accelerator`` asks for one (or ``auto`` finds one) and torch sees it, at
    ``train.precision``, on this process's own GPU when several processes share the machine (a
    distributed fit); otherwise the CPU in float32, since mixed precision on a CPU is slower and
    less exact there, and a run trained on a GPU must still be scored where there is none. A fit
    that forks its processes (``ddp_fork``) is evaluated on the CPU too, as CUDA started in the
    parent would stop the next forked fit."""
    from crabser.devices import GPU_ACCELERATORS
    from crabser.training.lit_module import distributed

    wants_gpu = settings.accelerator in (*GPU_ACCELERATORS, "auto")
    forked = "fork" in settings.strategy or "notebook" in settings.strategy
    if wants_gpu and torch.cuda.is_available() and not forked:
        devices: list[int] | int = [torch.cuda.current_device()] if distributed() else 1
        return "gpu", devices, settings.precision
    if settings.accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        log.info("no CUDA GPU here: evaluating on the CPU")
    return "cpu", 1, "32-true"


def predict_loader(
    module: CrabLitModule, loader: DataLoader[Any], settings: TrainConfig, taps: bool = False
) -> Predictions:
    """Run ``module.predict_step`` over every batch of ``loader`` on the device
    :func:`evaluation_device` chooses; ``taps``: keep each tap's representation."""
    import lightning as L

    accelerator, devices, precision = evaluation_device(settings)
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # no device banner per evaluation
    try:
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            precision=cast(Any, precision),  # one of Lightning's precision names
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    finally:
        quiet.setLevel(level)
    module.predict_taps = taps
    try:
        with warnings.catch_warnings():  # Lightning's use of a deprecated torch pytree API, and
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            # our batch samplers for evaluation return every utterance (shard=False)
            warnings.filterwarnings("ignore", message=".*custom batch sampler.*")
            batches = cast(list[dict[str, Any]], trainer.predict(module, loader) or [])
    finally:
        module.predict_taps = False
    names = batches[0]["taps"].keys() if batches else ()
    return Predictions(
        ids=[i for batch in batches for i in batch["ids"]],
        logits=torch.cat([b["logits"] for b in batches]) if batches else torch.zeros(0, 0),
        labels=torch.cat([b["labels"] for b in batches])
        if batches
        else torch.zeros(0, dtype=torch.long),
        taps={name: torch.cat([b["taps"][name] for b in batches]) for name in names},
    )


def predict_split(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    module: CrabLitModule,
    split: str,
    taps: bool = False,
) -> Predictions:
    """A trained module's outputs on one split of a run's manifest (cached features, or raw audio
    and text for a fine-tuned module)."""
    loader = split_loader(config, manifest, encoders, module, split)
    return predict_loader(module, loader, config.train, taps)
