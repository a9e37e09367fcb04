"""Reading checkpoints and exported models with one clear error instead of a traceback.

A truncated, zero-byte or otherwise damaged ``.ckpt`` file (an interrupted copy, a full disk) makes
``torch.load`` raise one of many exception types (``RuntimeError``, ``EOFError``,
``UnpicklingError``, ``KeyError`` ...). :func:`read_checkpoint` and :func:`load_checkpoint_module`
turn every failure to read one into a :class:`CheckpointError` naming the file. Weights that are
not finite (a run whose training diverged before the loss guard existed) are refused too, so such a
model never predicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from crabser.errors import CrabserError

if TYPE_CHECKING:
    import lightning as L

    from crabser.training.lit_module import CrabLitModule

T = TypeVar("T")
Module = TypeVar("Module", bound="L.LightningModule")

REFIT_CHECKPOINT = "refit.ckpt"  #: a run's model refitted on training + validation (train.refit)
REFIT_FOLDER = "refit"  #: where in a run folder the refit trains
BEST_CHECKPOINT = "best.ckpt"  #: a run's checkpoint of the best validation UAR
#: a key of ``last.ckpt``: True when its fit was stopped there (``trainer.should_stop``, set by
#: early stopping), which Lightning does not save itself
STOPPED = "crabser_stopped"


def run_checkpoint(run_dir: Path, name: str | None = None) -> Path:
    """The checkpoint ``name`` of a run, or (None) the one that is its model: the refitted one
    where ``train.refit`` made one, else the best one by validation UAR."""
    folder = Path(run_dir) / "checkpoints"
    if name:
        return folder / name
    return (
        folder / REFIT_CHECKPOINT
        if (folder / REFIT_CHECKPOINT).is_file()
        else folder / BEST_CHECKPOINT
    )


class CheckpointError(CrabserError):
    """A checkpoint file that is missing, damaged or holds unusable weights."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)


def _guarded(
    path: Path,
    action: Callable[[], T],
    missing: str = "no checkpoint; train the run first",
    damaged: str = "damaged or not a checkpoint",
    remedy: str = "retrain or restore it",
) -> T:
    if not path.is_file():
        raise CheckpointError(path, missing)
    try:
        return action()
    except CrabserError:
        raise
    except Exception as error:  # noqa: BLE001 - torch.load fails with many types on damaged files
        raise CheckpointError(path, f"{damaged} ({_short(error)}); {remedy}") from None


def _short(error: Exception) -> str:
    """The exception's type and the first sentence of its message, at most 80 characters."""
    text = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:80]}" if text else type(error).__name__


def guarded_read(
    path: str | Path, read: Callable[[Path], T], remedy: str = "export the model again"
) -> T:
    """``read(path)`` of a model file (exported weights, their metadata, a stack's forests), or
    CheckpointError naming it and saying how to remake it (``remedy``)."""
    path = Path(path)
    return _guarded(path, lambda: read(path), "file not found", "damaged model file", remedy)


def read_checkpoint(path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """``torch.load`` of a checkpoint on the CPU (``kwargs`` passed on), or CheckpointError."""
    path = Path(path)
    loaded = _guarded(
        path, lambda: torch.load(path, map_location="cpu", weights_only=False, **kwargs)
    )
    if not isinstance(loaded, dict):
        raise CheckpointError(path, f"not a Lightning checkpoint (holds a {type(loaded).__name__})")
    return loaded


def load_checkpoint_module(cls: type[Module], path: str | Path) -> Module:
    """``cls.load_from_checkpoint`` on the CPU in eval mode, or CheckpointError (damaged file,
    non-finite weights)."""
    path = Path(path)
    module = _guarded(path, lambda: cls.load_from_checkpoint(str(path), map_location="cpu").eval())
    require_finite(module.state_dict().items(), path)
    return module


def require_finite(tensors: Iterable[tuple[str, torch.Tensor]], source: object) -> None:
    """CheckpointError naming the first floating tensor with NaN or infinite values."""
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                source,
                f"weight {name} is not finite (NaN/inf): the training diverged; retrain with a "
                "lower train.lr_head",
            )


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an exported safetensors file, as float32; CheckpointError naming the file if
    it is missing or damaged or holds a non-finite weight."""
    from safetensors.torch import load_file

    path = Path(path)
    weights = {k: v.float() for k, v in guarded_read(path, lambda p: load_file(str(p))).items()}
    require_finite(weights.items(), path)
    return weights


def checkpoint_epochs(last: str | Path) -> int | None:
    """How many epochs the checkpoint to resume from holds (the first epoch a resumed run trains),
    None if there is none; CheckpointError if it is damaged (Lightning would fail with a traceback
    inside ``fit``). One read of the pickled metadata (``mmap``: the weights stay on disk)."""
    last = Path(last)
    return int(read_checkpoint(last, mmap=True)["epoch"]) if last.is_file() else None


def fit_stopped(last: str | Path) -> bool:
    """Whether the fit of the checkpoint to resume from was stopped there (:data:`STOPPED`): it has
    nothing left to train. False if there is none, or it was saved before this was recorded."""
    last = Path(last)
    return last.is_file() and bool(read_checkpoint(last, mmap=True).get(STOPPED, False))


def load_module(checkpoint: Path) -> CrabLitModule:
    """The Lightning module of a checkpoint: a fine-tuned one (with encoders) or a head on
    features."""
    from crabser.training.lit_module import CrabLitModule

    # mmap: only the pickled metadata is read here; the weights are read once, by
    # load_from_checkpoint
    hparams = read_checkpoint(checkpoint, mmap=True).get("hyper_parameters", {})
    if "encoders" in hparams:
        from crabser.features.encoders import require_models_available
        from crabser.training.finetune import FinetuneLitModule

        require_models_available(
            hparams["encoders"].get("speech_model"), hparams["encoders"].get("text_model")
        )
        return load_checkpoint_module(FinetuneLitModule, checkpoint)
    return load_checkpoint_module(CrabLitModule, checkpoint)
