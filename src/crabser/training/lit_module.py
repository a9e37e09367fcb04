"""Lightning module: a model + its training objective, hierarchical AdamW, cosine schedule, UAR
selection.

Several processes (DDP, ``train.strategy: ddp``): each rank trains on its own share of every epoch's
batches (:mod:`crabser.data.sampling`), and so do the supervision legs: MPCL (and SupCon) contrast
each utterance with the others *of its rank's batch*, not with a batch gathered from all ranks.
Why per-rank: the contrastive problem (``train.batch_size`` items, their positives and negatives)
is then the same whatever the number of processes, as in the paper's single-GPU training, and no
step pays an all-gather per tap; only the gradients are averaged over ranks, as DDP does for any
loss. (Gathering would make the legs' loss depend on the device count, and would need gathers that
carry gradients.) Validation is scored once over every validation utterance: each rank predicts its
share, and the predictions of all ranks are gathered (:func:`gather_uneven`) before the UAR, so
every rank logs the same ``val_uar`` and selects the same best checkpoint. The epoch's training
losses are summed over ranks too.
"""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from crabser.config import saved_section
from crabser.evaluation.metrics import compute_metrics
from crabser.models.registry import build_model
from crabser.training.datamodule import Batch, FeatureBatch, RawBatch
from crabser.training.objective import LossParts, build_objective
from crabser.training.optim import build_optimizer, parameter_groups


def distributed() -> bool:
    """Whether a process group is running (several ranks)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over every rank; as is without a process group. Every rank must call it."""
    if not distributed():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def gather_uneven(values: torch.Tensor) -> torch.Tensor:
    """A 1-D tensor of every rank, concatenated in rank order (their lengths may differ); as is
    without a process group. Every rank must call it."""
    if not distributed():
        return values
    size = torch.tensor([len(values)], device=values.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    padded = torch.zeros(int(max(sizes)), dtype=values.dtype, device=values.device)
    padded[: len(values)] = values
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, sizes)])


class CrabLitModule(L.LightningModule):
    """Trains Crab on cached features (frozen encoders); logs ``val_uar`` for model selection."""

    def __init__(
        self,
        input_dims: dict[str, int],
        labels: list[str],
        model: dict[str, Any],
        loss: dict[str, Any],
        train: dict[str, Any],
        class_weights: list[float] | None = None,
        speech_layers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        #: the train settings, completed (crabser.config.saved_section: older checkpoints lack some)
        self.train_config = saved_section("train", train).model_dump()
        self.labels = list(labels)
        self.model = build_model(model, input_dims, len(labels), speech_layers)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        neutral = self.train_config["neutral_label"]
        neutral_index = self.labels.index(neutral) if neutral in self.labels else None
        self.objective = build_objective(
            loss, model, self.model.tap_dims(), weights, len(labels), neutral_index
        )
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"val": []}
        #: this epoch's loss sums, for on_train_epoch_end
        self._train_sums: dict[str, torch.Tensor | int] = {}
        self.last_metrics: dict[str, dict[str, Any]] = {}
        self.predict_taps = False  #: predict_step keeps each tap's representation too

    def inputs(self, batch: Batch) -> tuple[dict[str, Any], dict[str, Any]]:
        """Per-modality features and masks of a batch (cached features here; encoders when
        fine-tuning)."""
        cached = cast(FeatureBatch, batch)
        return cached["features"], cached["masks"]

    def encoder_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters trained at the encoder LR (none: the encoders are frozen and cached)."""
        return []

    def forward(self, batch: Batch) -> torch.Tensor:
        """Class logits of a batch."""
        logits: torch.Tensor = self.model(*self.inputs(batch)).logits
        return logits

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        """Ids, logits, true labels (and taps, with ``predict_taps``) of a batch, on the CPU in
        float32 (:mod:`crabser.training.predict`)."""
        output = self.model(*self.inputs(batch), return_taps=self.predict_taps)
        taps = output.taps if self.predict_taps else {}
        return {
            "ids": list(batch["ids"]),
            "logits": output.logits.float().cpu(),
            "labels": batch["labels"].cpu(),
            "taps": {name: value.float().cpu() for name, value in taps.items()},
        }

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        output = self.model(*self.inputs(batch), return_taps=self.objective.wants_taps)
        raw = cast(RawBatch, batch)  # only raw batches are mixed (EAM)
        mix = (raw["mix_labels"], raw["mix_lambdas"]) if "mix_labels" in raw else None
        parts: LossParts = self.objective(output, batch["labels"], mix)
        size = len(batch["labels"])
        sums = self._train_sums
        sums["utterances"] = sums.get("utterances", 0) + size
        for name, value in (
            ("train_loss", parts.total),
            ("train_classification", parts.classification),
            ("train_legs", parts.legs),
        ):
            if value is not None:
                sums[name] = sums.get(name, 0.0) + value.detach() * size
        return parts.total

    def on_train_epoch_end(self) -> None:
        """Log the epoch's utterance-weighted mean losses once (``self.log`` per step costs ~4 % of
        a CPU epoch in Lightning's bookkeeping)."""
        sums, self._train_sums = self._train_sums, {}
        count = sum_over_ranks(torch.tensor(float(sums.pop("utterances", 0)), device=self.device))
        for name, total in sums.items():
            self.log(
                name, sum_over_ranks(torch.as_tensor(total)) / count, prog_bar=name == "train_loss"
            )

    def _evaluation_step(self, batch: Batch, stage: str) -> None:
        logits = self(batch)
        self._outputs[stage].append((logits.argmax(dim=-1), batch["labels"]))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def _evaluation_end(self, stage: str) -> None:
        outputs, empty = self._outputs[stage], torch.zeros(0, dtype=torch.long, device=self.device)
        preds = gather_uneven(torch.cat([p for p, _ in outputs]) if outputs else empty).cpu()
        truths = gather_uneven(torch.cat([t for _, t in outputs]) if outputs else empty).cpu()
        outputs.clear()
        if not len(truths):
            return
        metrics = compute_metrics(truths.tolist(), preds.tolist(), self.labels)
        self.last_metrics[stage] = metrics
        for key in ("uar", "war", "macro_f1"):
            self.log(f"{stage}_{key}", metrics[key], prog_bar=key == "uar")

    def on_validation_epoch_end(self) -> None:
        self._evaluation_end("val")

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        cfg = self.train_config
        own = self.objective.parameter_groups()  # e.g. the center loss's centres, at their own LR
        layer_sum = getattr(getattr(self.model, "input_stage", None), "speech_layer_sum", None)
        if layer_sum is not None and cfg.get("lr_layer_weights"):
            own = [
                *own,
                {
                    "params": list(layer_sum.parameters()),
                    "lr": cfg["lr_layer_weights"],
                    "weight_decay": 0.0,
                    "name": "layer_weights",
                },
            ]
        taken = {id(p) for group in own for p in group["params"]}
        head = [
            p
            for p in [*self.model.parameters(), *self.objective.parameters()]
            if id(p) not in taken
        ]
        groups = (
            parameter_groups(head, self.encoder_parameters(), cfg["lr_head"], cfg["lr_encoder"])
            + own
        )
        steps_per_epoch = 1
        if cfg["warmup_steps"]:
            total = self.trainer.estimated_stepping_batches
            steps_per_epoch = max(1, int(total) // max(1, self.trainer.max_epochs or 1))
        optimizer, scheduler, interval = build_optimizer(
            groups,
            cfg["weight_decay"],
            cfg["epochs"],
            cfg["min_lr_ratio"],
            optimizer=cfg["optimizer"],
            schedule=cfg["schedule"],
            lr_decay=cfg["lr_decay"],
            warmup_steps=cfg["warmup_steps"],
            steps_per_epoch=steps_per_epoch,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval},
        }
