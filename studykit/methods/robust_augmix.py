"""RobustAugMix (Martinez-Martinez and Brown, "RobustAugMix: Joint Optimization of Natural and
Adversarial Robustness"): AugMix's JSD consistency with an L2 PGD image as the third view.

    L = CE(f(x), y) + lambda * JSD(f(x), f(AugMix(x)), f(x + delta*)),  lambda = 12
    delta* = L2 PGD on CE, eps = 1.0, 7 steps of 2.5 eps / 7, random start, in eval mode

The PGD image is found in eval mode with no parameter gradients, so it leaves the BN running
statistics untouched (``studykit.attacks.attack_mode``); the three views then go through three
separate train-mode forwards, as the authors' trainer does (the paper does not say), so each
view is normalized by its own batch statistics and the BN running statistics are updated three
times per step. The kit's AugMix runs its three views through one forward of the concatenated
batch, normalized by the statistics of all three; ``joint_forward=True`` does that here, so the
two methods can be compared under one BN treatment. The paper trains with Nesterov momentum
(``-p nesterov=True``; a training option, not the method's). ``eps_ramp``/``eps_delay`` grow
eps and the step size from 0 as PGD-AT's do (both 0 by default, the paper's setting).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from studykit.attacks import pgd
from studykit.augment import augmix
from studykit.checks import AT_LEAST_1, FRACTION, POSITIVE
from studykit.losses import jsd_consistency
from studykit.methods.augmix import CHAIN_RANGES
from studykit.methods.base import Method, MethodConfig, StepOutput, register_method
from studykit.schedules import EpsRamp


@dataclass(frozen=True, kw_only=True)
class RobustAugMixConfig(MethodConfig):
    """RobustAugMix options; defaults are the paper's CIFAR-10 values.

    ``step_size`` None means 2.5 * eps / steps (the paper's 2.5 * eps / 7 at 7 steps).
    ``joint_forward``: one train-mode forward of the clean, AugMix and PGD views concatenated
    (BN statistics of the 3N batch, one running-statistics update), as the kit's AugMix;
    False: three forwards, one per view (the authors' trainer).
    """

    jsd_lambda: float = 12.0
    eps: float = 1.0
    steps: int = 7
    step_size: float | None = None
    eps_ramp: float = 0.0
    eps_delay: float = 0.0
    width: int = 3
    depth: int = -1
    severity: float = 3.0
    alpha: float = 1.0
    joint_forward: bool = False

    RANGES = {**CHAIN_RANGES, "steps": AT_LEAST_1, "step_size": POSITIVE,
              "eps_ramp": FRACTION, "eps_delay": FRACTION}
    HASH_AT_DEFAULT_OMITTED = ("joint_forward",)  # added later: runs made before keep their hash

    def __post_init__(self) -> None:
        if self.depth == 0:
            raise ValueError("depth must be -1 (random 1-3 per chain) or >= 1, got 0")

    @property
    def pgd_step_size(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


@register_method("robust_augmix")
class RobustAugMix(EpsRamp, Method):
    Config = RobustAugMixConfig

    def adversarial_images(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """x + delta*: L2 PGD in eval mode (BN statistics untouched), random start."""
        c = self.config
        return pgd(model, x, y, eps=c.eps * self.scale, steps=c.steps,
                   step_size=c.pgd_step_size * self.scale, norm="l2", random_start=True,
                   generator=generator if generator is not None else self.rng(x.device),
                   eval_mode=True)

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        c = self.config
        g = self.rng(x.device)
        x_mix = augmix(x, generator=g, width=c.width, depth=c.depth, severity=c.severity,
                       alpha=c.alpha)
        x_adv = self.adversarial_images(model, x, y, g).detach()
        if c.joint_forward:
            logits, logits_mix, logits_adv = model(torch.cat([x, x_mix, x_adv])).chunk(3)
        else:
            logits, logits_mix, logits_adv = model(x), model(x_mix), model(x_adv)
        ce = F.cross_entropy(logits, y)
        jsd = jsd_consistency([logits, logits_mix, logits_adv])
        metrics = {"ce": ce.detach(), "jsd": jsd.detach(),
                   "adv_acc": (logits_adv.detach().argmax(1) == y).float().mean() * 100,
                   "eps_scale": self.scale}
        return StepOutput(loss=ce + c.jsd_lambda * jsd, logits=logits, metrics=metrics)
