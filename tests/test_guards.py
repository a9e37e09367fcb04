"""Training guards: a non-finite loss stops training naming the step and settings; no GPU for
accelerator=gpu."""

from types import SimpleNamespace

import pytest
import torch

from crabser.devices import check_accelerator
from crabser.errors import ConfigError
from crabser.training.checkpoint_io import CheckpointError, require_finite
from crabser.training.guards import FiniteLossGuard, NonFiniteLossError

TRAIN = {"lr_head": 0.5, "lr_encoder": 1e-6}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_training_naming_epoch_batch_and_settings(value):
    guard = FiniteLossGuard(TRAIN, {"tau": 0.1})
    trainer = SimpleNamespace(current_epoch=2)
    guard.on_train_batch_end(
        trainer, None, {"loss": torch.tensor(1.5)}, None, 0
    )  # a finite loss goes on
    with pytest.raises(NonFiniteLossError) as caught:
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(value)}, None, 6)
    message = str(caught.value)
    assert (
        "epoch 3" in message
        and "batch 7" in message
        and "train.lr_head=0.5" in message
        and "loss.tau=0.1" in message
    )


@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "GPU"])
def test_gpu_accelerator_without_a_gpu_is_a_config_error(accelerator):
    with pytest.raises(ConfigError, match="train.accelerator"):
        check_accelerator(accelerator, cuda_available=False)
    check_accelerator(accelerator, cuda_available=True)
    check_accelerator("cpu", cuda_available=False)


def test_non_finite_weights_are_named():
    with pytest.raises(CheckpointError, match="layer.weight is not finite"):
        require_finite(
            [("layer.bias", torch.zeros(2)), ("layer.weight", torch.tensor([1.0, float("nan")]))],
            "model.ckpt",
        )
    require_finite([("steps", torch.tensor([3])), ("w", torch.ones(2))], "model.ckpt")


def test_a_bad_loss_in_another_process_stops_this_one_too():
    """Distributed fits: every process takes the decision together, none waits alone in a
    collective."""
    decisions = []

    def any_process(decision: bool, all: bool = True) -> bool:
        decisions.append((decision, all))
        return True  # another process saw a NaN

    trainer = SimpleNamespace(
        current_epoch=0, strategy=SimpleNamespace(reduce_boolean_decision=any_process)
    )
    with pytest.raises(NonFiniteLossError, match="another process"):
        FiniteLossGuard(TRAIN).on_train_batch_end(
            trainer, None, {"loss": torch.tensor(0.7)}, None, 0
        )
    assert decisions == [(False, False)]
