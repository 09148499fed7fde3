"""Standard training: cross-entropy on the crop/flip-augmented batch.

The CIFAR recipe every paper compares against: random crop (pad 4) and horizontal flip, done by
the device loader; the loss is CE(f(x), y), optionally with label smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from studykit.checks import Range
from studykit.methods.base import Method, MethodConfig, StepOutput, register_method


@dataclass(frozen=True, kw_only=True)
class StandardConfig(MethodConfig):
    label_smoothing: float = 0.0

    RANGES = {"label_smoothing": Range(0, 1, hi_open=True)}


@register_method("standard")
class Standard(Method):
    Config = StandardConfig

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)
        return StepOutput(loss=loss, logits=logits)
