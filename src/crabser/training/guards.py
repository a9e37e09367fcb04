"""Checks that stop a training run early with one clear line instead of a useless model or a
traceback.

- :class:`FiniteLossGuard` (a Lightning callback) stops training at the first optimisation step
  whose loss is NaN or infinite, naming the epoch, the step and the settings that most often cause
  it. A diverged run would otherwise go on, save NaN weights and predict one class for everything.
  Checked after every training batch (one host sync per batch: negligible next to a step on a CPU);
  set ``every_n_batches`` higher to check less often. In a distributed fit every process takes the
  same decision (any process's bad loss stops all of them), so none is left waiting in a collective.

A GPU asked for and not there is :func:`crabser.devices.check_accelerator`'s check.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from crabser.errors import CrabserError

#: settings named in the error, with their values, as the likely causes of a diverging loss
LIKELY_CAUSES = ("lr_head", "lr_encoder")


class NonFiniteLossError(CrabserError):
    """Training produced a NaN or infinite loss."""


class FiniteLossGuard(L.Callback):
    """Raise :class:`NonFiniteLossError` when a training step's loss is not finite."""

    def __init__(
        self, train: dict[str, Any], loss: dict[str, Any] | None = None, every_n_batches: int = 1
    ) -> None:
        """``train`` / ``loss``: the run's ``train`` and ``loss`` settings, quoted in the error."""
        self.hint = _hint(train, loss or {})
        self.every_n_batches = max(1, every_n_batches)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx % self.every_n_batches:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        local = isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all())
        strategy = getattr(trainer, "strategy", None)
        bad = (
            strategy.reduce_boolean_decision(local, all=False) if strategy is not None else local
        )  # any process
        if bad:
            value = (
                loss.detach().float().item()
                if local and loss is not None
                else "non-finite in another process"
            )
            raise NonFiniteLossError(
                f"training loss became {value} at epoch {trainer.current_epoch + 1}, "
                f"batch {batch_idx + 1}: training diverged; try a lower learning rate ({self.hint})"
            )


def _hint(train: dict[str, Any], loss: dict[str, Any]) -> str:
    named = [f"train.{key}={train[key]}" for key in LIKELY_CAUSES if key in train]
    if "tau" in loss:
        named.append(f"loss.tau={loss['tau']}")
    return ", ".join(named)
