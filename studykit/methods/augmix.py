"""AugMix (Hendrycks et al., ICLR 2020): train on clean and two AugMix views with a
Jensen-Shannon consistency term.

    x_aug = (1 - m) x + m sum_i w_i chain_i(x),  w ~ Dirichlet(1,1,1),  m ~ Beta(1,1)
    L = CE(f(x), y) + lambda * JSD(f(x), f(x_aug1), f(x_aug2)),  lambda = 12

Chains have width 3, depth 1-3 and severity 3 over the 9-op AugMix set, applied in batches on the
device (``studykit.augment``). With a plain BN model the three views share one forward, as
in the reference code. With ``norm`` dubn/dubin (AugMax Table 8, "AugMix-DuBN/DuBIN") the clean
images go through the main BN and the AugMix views through the auxiliary BN, as the AugMax paper
routes them; ibn converts the paper's IBN placement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from studykit.augment import augmix_views
from studykit.checks import AT_LEAST_1, POSITIVE, Range
from studykit.losses import jsd_consistency
from studykit.methods.base import Method, MethodConfig, StepOutput, register_method
from studykit.normalization import bn_route, convert_norm, dual_bn_layers, set_bn_route

NORMS = ("bn", "dubn", "dubin", "ibn")
# Ranges of the AugMix chain options, shared by every method that draws AugMix chains (depth -1:
# uniform in 1..3 per chain; 0 is refused by the Configs).
CHAIN_RANGES = {"width": AT_LEAST_1, "depth": Range(-1), "severity": Range(0, 10, lo_open=True),
                "alpha": POSITIVE}


@dataclass(frozen=True, kw_only=True)
class AugMixConfig(MethodConfig):
    jsd_lambda: float = 12.0
    width: int = 3
    depth: int = -1  # -1: uniform in 1..3 per chain
    severity: float = 3.0
    alpha: float = 1.0
    jsd: bool = True  # False: CE on one AugMix view only (AugMix without the JSD loss)
    norm: str = "bn"

    RANGES = CHAIN_RANGES
    CHOICES = {"norm": NORMS}

    def __post_init__(self) -> None:
        check_norm(self.norm)
        if self.depth == 0:
            raise ValueError("depth must be -1 (random 1-3 per chain) or >= 1, got 0")


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")


class NormChoice:
    """Mix-in for methods whose Config has ``norm``: convert the model's BNs at preparation
    (bn: unchanged) and evaluate through the clean (main) BN."""

    config: AugMixConfig

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.config.norm != "bn":
            convert_norm(model, self.config.norm)
        return set_bn_route(model, "clean")

    def eval_model(self, model: nn.Module) -> nn.Module:
        return set_bn_route(model, "clean")


@register_method("augmix")
class AugMix(NormChoice, Method):
    Config = AugMixConfig

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        c = self.config
        g = self.rng(x.device)
        kw = dict(width=c.width, depth=c.depth, severity=c.severity, alpha=c.alpha)
        if not c.jsd:
            (x_aug,) = augmix_views(x, 1, generator=g, **kw)
            logits = model(x_aug)
            return StepOutput(loss=F.cross_entropy(logits, y), logits=logits)
        x1, x2 = augmix_views(x, 2, generator=g, **kw)
        if any(True for _ in dual_bn_layers(model)):
            logits = model(x)
            with bn_route(model, "aug"):
                l1, l2 = model(torch.cat([x1, x2])).chunk(2)
        else:
            logits, l1, l2 = model(torch.cat([x, x1, x2])).chunk(3)
        ce = F.cross_entropy(logits, y)
        jsd = jsd_consistency([logits, l1, l2])
        return StepOutput(loss=ce + c.jsd_lambda * jsd, logits=logits,
                          metrics={"ce": ce.detach(), "jsd": jsd.detach()})
