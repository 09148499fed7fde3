"""The three-view consistency loss shared by AugMax, its Table-10 baselines and RobustAugMix.

    L = CE(f(x), y) + lambda * JSD(f(x), f(x_hard), f(x_mix))

(or 1/2 [CE(f(x)) + CE(f(x_hard))] in place of CE(f(x)): AugMax Eq. 5). With dual BN layers
(DuBN, DuBIN) there are three forwards, so each BN sees batch statistics of one kind of image:
x_hard through the auxiliary BN, x_mix through ``mix_route``, x through the main BN. A model
without dual layers has one BN per layer, and the three views go through it as one forward over
their concatenation (as AugMix does): separate train-mode forwards would give each view its own
batch statistics, a hidden per-view BN that a plain-BN baseline must not have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from studykit.losses import jsd_consistency
from studykit.methods.base import StepOutput
from studykit.normalization import bn_route, dual_bn_layers


def has_dual_layers(model: nn.Module) -> bool:
    return any(True for _ in dual_bn_layers(model))


def three_view_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_hard: torch.Tensor,
    x_mix: torch.Tensor, *, jsd_lambda: float, ce_on_hard: bool = False,
    mix_route: str = "clean",
) -> StepOutput:
    """One training step's loss on a clean, a hard and an AugMix view (module docstring).

    Metrics (device tensors): ``ce``, ``jsd``, ``hard_acc`` (% of hard images classified
    correctly in this forward) and ``hard_ce``.
    """
    x_hard, x_mix = x_hard.detach(), x_mix.detach()
    if has_dual_layers(model):
        with bn_route(model, "aug"):
            logits_hard = model(x_hard)
        with bn_route(model, mix_route):
            logits_mix = model(x_mix)
        logits = model(x)
    else:
        logits, logits_hard, logits_mix = model(torch.cat([x, x_hard, x_mix])).chunk(3)
    ce = F.cross_entropy(logits, y)
    hard_ce = F.cross_entropy(logits_hard, y)
    if ce_on_hard:
        ce = 0.5 * (ce + hard_ce)
    jsd = jsd_consistency([logits, logits_hard, logits_mix])
    metrics = {"ce": ce.detach(), "jsd": jsd.detach(), "hard_ce": hard_ce.detach(),
               "hard_acc": (logits_hard.argmax(1) == y).float().mean() * 100}
    return StepOutput(loss=ce + jsd_lambda * jsd, logits=logits, metrics=metrics)
