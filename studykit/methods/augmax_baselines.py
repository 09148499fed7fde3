"""The strategy baselines of AugMax Table 10 (Wang et al., NeurIPS 2021, Sec. 4.3, App. B),
trained with AugMax's loss (``three_view_step``: CE(f(x)) + lambda JSD(f(x), f(x_hard),
f(x_augmix)), lambda = 10; x_hard through the auxiliary BN) so that only the way x_hard is made
differs:

* ``augmix_pgdat``: x_hard is a Linf PGD image (8/255, step 2/255, 10 steps): diversity from the
  AugMix view and hardness from PGD, side by side.
* ``advmix``: random ops and random mixing (Dirichlet w, Beta m) as in AugMix, with the op
  magnitudes (levels and signs) chosen adversarially by worst-of-k (k = 5): per image, the one of
  k magnitude draws with the largest loss.
* ``advmax``: the worst-of-k magnitudes of AdvMix, then AugMax's adversarial mixing on them,
  then StAdv (Xiao et al., ICLR 2018; ``studykit.attacks.stadv``) on the mixed image: App. B
  "also include[s] a stronger spatial transform attack, StAdv, in AdvMax" without saying
  where; here it is the last step, a flow field (at most ``stadv_bound`` pixels per component,
  ``stadv_steps`` signed steps of bound/4, smoothness weight ``stadv_tau`` = 0.05, the StAdv
  paper's) that warps the AdvMax image. ``stadv=False`` leaves it out.

All draw their randomness from the method's generator and run their inner searches in eval mode
through the auxiliary BN. ``norm`` defaults to dubin, as AugMax's, to compare strategies alone.
The training step is AugMax's (``methods.augmax.AugMaxStrategy``); each baseline says how its
hard view is made (``hard_images``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from studykit.attacks import attack_mode, flow_warp, pgd, stadv_flow
from studykit.augmax_search import STOP_RULES, check_stop_rule
from studykit.augment import AugMixParams, augmix_chains, mix, sample_augmix_params
from studykit.checks import AT_LEAST_1, POSITIVE
from studykit.methods.augmax import AugMaxStrategy, adversarial_mix
from studykit.methods.augmix import CHAIN_RANGES, NORMS, check_norm
from studykit.methods.base import MethodConfig, register_method


def worst_of_k_levels(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: AugMixParams, *, k: int = 5,
    severity: float = 3.0, generator: torch.Generator | None = None,
) -> tuple[AugMixParams, torch.Tensor]:
    """Per image, the op levels/signs (out of k draws) whose AugMix image has the largest loss.

    Ops, depths and mixing weights stay those of ``params``; only magnitudes are searched.

    Returns:
        The chosen parameters and their chains (width, N, C, H, W), already computed here.
    """
    n = x.shape[0]
    draws = sample_augmix_params(k * n, width=params.width, depth=params.op.shape[2],
                                 severity=severity, generator=generator).to(x.device)
    trial = replace(params.to(x.device),
                    op=params.op.repeat(1, k, 1), depth=params.depth.repeat(1, k),
                    level=draws.level, sign=draws.sign,
                    w=params.w.repeat(k, 1), m=params.m.repeat(k))
    chains = augmix_chains(x.repeat(k, 1, 1, 1), trial)
    with attack_mode(model, eval_mode=True), torch.no_grad():
        x_trial = mix(x.repeat(k, 1, 1, 1), chains, trial.w, trial.m)
        loss = F.cross_entropy(model(x_trial), y.repeat(k), reduction="none").view(k, n)
    best = loss.argmax(0) * n + torch.arange(n, device=x.device)
    return trial.select(best), chains[:, best]


@dataclass(frozen=True, kw_only=True)
class BaselineConfig(MethodConfig):
    norm: str = "dubin"
    jsd_lambda: float = 10.0
    k: int = 5  # worst-of-k magnitude draws (advmix, advmax)
    steps: int = 10  # AugMax mixing steps (advmax)
    step_size: float = 0.1
    early_stop: int | None = 1
    stop_rule: str = "paper"  # AugMax search early-stop rule (advmax)
    pgd_eps: float = 8 / 255  # augmix_pgdat
    pgd_steps: int = 10
    width: int = 3
    depth: int = -1
    severity: float = 3.0
    alpha: float = 1.0

    RANGES = {**CHAIN_RANGES, "k": AT_LEAST_1, "steps": AT_LEAST_1, "early_stop": AT_LEAST_1}
    CHOICES = {"norm": NORMS, "stop_rule": STOP_RULES}

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_stop_rule(self.stop_rule)


@dataclass(frozen=True, kw_only=True)
class AdvMaxConfig(BaselineConfig):
    """AdvMax's options: the baselines' plus StAdv's (AugMax App. B). A Config of its own, so
    the other baselines' configs (and run hashes) do not carry options they never use."""

    stadv: bool = True  # App. B: StAdv on top of the worst-case mixture
    stadv_bound: float = 1.0  # pixels per flow component (kit's choice; StAdv has no bound)
    stadv_steps: int = 10  # signed steps of stadv_bound / 4 (the kit's Linf PGD convention)
    stadv_tau: float = 0.05  # smoothness weight, the StAdv paper's

    RANGES = {**BaselineConfig.RANGES, "stadv_bound": POSITIVE, "stadv_steps": AT_LEAST_1}


class _Baseline(AugMaxStrategy):
    Config = BaselineConfig


@register_method("augmix_pgdat")
class AugMixPGDAT(_Baseline):
    """AugMix view plus a Linf PGD image."""

    def hard_images(self, model, x, y, params, g):
        c = self.config
        return pgd(model, x, y, eps=c.pgd_eps, steps=c.pgd_steps, norm="linf",
                   generator=g), {}


@register_method("advmix")
class AdvMix(_Baseline):
    """Worst-of-k op magnitudes, random mixing."""

    def hard_images(self, model, x, y, params, g):
        c = self.config
        worst, chains = worst_of_k_levels(model, x, y, params, k=c.k, severity=c.severity,
                                          generator=g)
        return mix(x, chains, worst.w, worst.m), {}


@register_method("advmax")
class AdvMax(_Baseline):
    """Worst-of-k op magnitudes, then adversarial mixing (AugMax's search), then StAdv."""

    Config = AdvMaxConfig
    config: AdvMaxConfig

    def hard_images(self, model, x, y, params, g):
        c = self.config
        _, chains = worst_of_k_levels(model, x, y, params, k=c.k, severity=c.severity,
                                      generator=g)
        x_hard, metrics = adversarial_mix(model, x, y, chains, c, g)
        if c.stadv:
            flow = stadv_flow(model, x_hard, y, bound=c.stadv_bound, steps=c.stadv_steps,
                              tau=c.stadv_tau)
            x_hard = flow_warp(x_hard, flow)
            metrics["stadv_shift"] = flow.norm(dim=1).mean()  # mean displacement, pixels
        return x_hard, metrics
