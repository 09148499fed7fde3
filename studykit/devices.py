"""Where things live: the device of a model and of a random generator.

Callers pass devices explicitly everywhere else; these two helpers answer "on which device
does this model compute" and "on which device does this generator draw", once for the package.
"""

from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    """The device of a model's first parameter (or buffer); ``fallback`` for a model with
    neither (a parameter-free transform)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device(fallback)


def generator_device(generator: torch.Generator | None) -> torch.device:
    """The device a generator draws on; torch's default CPU generator for ``None``."""
    return generator.device if generator is not None else torch.device("cpu")
