"""AdversarialAugment, AdA (Calian et al., ICLR 2022, "Defending against image corruptions through
adversarial augmentations"): train on images corrupted by a corruption network whose weights are
perturbed adversarially, per example,

    min_theta E_(x,y) [ max_{||beta_l|| <= nu ||phi_l||} CE(f_theta(c_{phi+beta}(x)), y) ]  (Eq. 3)

The inner maximization (``studykit.weight_perturbation.ada_search``): random start inside every
block's ball, ``steps`` iterated-FGSM steps of ``step_fraction`` of the median block radius,
projection per block, in eval mode and fp32. Then the SSIM guard (``studykit.ssim_guard``,
Appendix G) and the batch of ``methods.perturbed_net`` (every image corrupted, Eq. 3; AugMix
last with ``augmix="jsd"`` or ``"plain"``: AdA+AugMix is this method with that option).

The paper's attack settings are the defaults: nu = 0.015, 10 steps, step 1/4 of the median
radius, t = 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from studykit.checks import AT_LEAST_1, POSITIVE
from studykit.methods.base import register_method
from studykit.methods.perturbed_net import PerturbedNetConfig, PerturbedNetMethod
from studykit.weight_perturbation import ada_search, median_step_size


@dataclass(frozen=True, kw_only=True)
class AdAConfig(PerturbedNetConfig):
    steps: int = 10
    step_fraction: float = 0.25

    RANGES: ClassVar[dict[str, Any]] = {**PerturbedNetConfig.RANGES, "steps": AT_LEAST_1,
                                        "step_fraction": POSITIVE}


@register_method("ada")
class AdA(PerturbedNetMethod):
    Config = AdAConfig
    config: AdAConfig

    def search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               beta: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        c = self.config
        return ada_search(self.net, self.phi, model, x, y, beta, self.radii, steps=c.steps,
                          step_size=median_step_size(self.radii, c.step_fraction))
