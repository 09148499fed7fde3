"""Standard training: cross-entropy on the crop/flip-augmented batch.

The CIFAR recipe every paper compares against: random crop (pad 4) and horizontal flip, done by
the device loader; the loss is CE(f(x), y), optionally with label smoothing. ``augment``
adds an augmentation on top of crop and flip: ``none`` (default) or ``randaugment`` (Cubuk et
al. 2020: ``randaugment_n`` ops per image at magnitude ``randaugment_m``, drawn per image;
N = 3, M = 5 are RandAugment's CIFAR-10 values for WRN-28-10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from studykit.augment import randaugment
from studykit.augment.rand_augment import MAX_MAGNITUDE
from studykit.checks import Range
from studykit.methods.base import Method, MethodConfig, StepOutput, register_method

#: What ``augment`` may name (on top of the loader's crop and flip).
AUGMENTS = ("none", "randaugment")


@dataclass(frozen=True, kw_only=True)
class StandardConfig(MethodConfig):
    label_smoothing: float = 0.0
    augment: str = "none"
    randaugment_n: int = 3
    randaugment_m: float = 5.0

    RANGES = {"label_smoothing": Range(0, 1, hi_open=True),
              "randaugment_m": Range(0, MAX_MAGNITUDE)}
    CHOICES = {"augment": AUGMENTS}

    def record(self) -> dict:
        out = super().record()
        if self.augment == "none":  # runs stored before `augment` existed keep their hash
            del out["augment"], out["randaugment_n"], out["randaugment_m"]
        return out


@register_method("standard")
class Standard(Method):
    Config = StandardConfig

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        c = self.config
        if c.augment == "randaugment":
            x = randaugment(x, c.randaugment_n, c.randaugment_m, generator=self.rng(x.device))
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=c.label_smoothing)
        return StepOutput(loss=loss, logits=logits)
