"""Where the work runs: ``train.accelerator`` (auto, cpu, gpu / cuda) decides for training and for
frozen feature extraction alike, so one setting puts a whole run on the GPU.

- :func:`check_accelerator` refuses ``gpu`` / ``cuda`` where torch sees no CUDA GPU, with one clear
  line instead of a traceback from Lightning or from ``Module.to``.
- :func:`extraction_device` is the torch device the frozen encoders run on (``cuda`` for gpu /
  cuda, and for auto when torch sees a GPU; else ``cpu``).
"""

from __future__ import annotations

import torch

from crabser.errors import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")  #: train.accelerator values that ask for a CUDA GPU


def check_accelerator(accelerator: str, cuda_available: bool | None = None) -> None:
    """ConfigError when ``train.accelerator`` asks for a CUDA GPU and torch sees none."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if accelerator.lower() in GPU_ACCELERATORS and not available:
        raise ConfigError(
            f"train.accelerator={accelerator}: no CUDA GPU is visible to torch "
            "(torch.cuda.is_available() is False; "
            f"torch {torch.__version__}); use train.accelerator=auto or cpu"
        )


def extraction_device(accelerator: str, cuda_available: bool | None = None) -> str:
    """The torch device frozen encoders run on for this ``train.accelerator``: ``cuda`` or
    ``cpu`` (ConfigError when it asks for a GPU that torch does not see)."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    check_accelerator(accelerator, available)
    wanted = accelerator.lower()
    return "cuda" if wanted in GPU_ACCELERATORS or (wanted == "auto" and available) else "cpu"
