"""MaxUp (Gong et al., CVPR 2021, "MaxUp: Lightweight Adversarial Training with Data Augmentation
Improves Neural Network Training"): for every image draw m augmented copies from P(.|x) and
train on the worst one,

    min_theta  E_x  max_{i <= m}  L(f(x'_i), y),    x'_1 .. x'_m ~ P(.|x) i.i.d.

The m losses are computed without gradient; per image the copy with the largest loss is kept,
comparing copies of the same image with each other (copies are laid out copy-major, index
``c * N + i``, so the losses reshape to (m, N) and the maximum runs over dim 0); then one ordinary
forward and backward on the chosen copies. m = 1 is plain augmentation with P.

P (``augmentation``): ``gauss`` (x + N(0, sigma^2), not clipped, as randomized smoothing
trains), ``cutout`` (one 16x16 square), ``cutmix`` (a box from a partner image; the label is
mixed by area, lam CE(y) + (1 - lam) CE(y_partner)), ``randaugment`` (N ops at magnitude M per
copy, the paper's Table 7 with WRN-28-10; N = 3, M = 5 are RandAugment's CIFAR-10 values for
that network), ``augmix`` (one AugMix image, no JSD; not in the paper).

The selection forward runs with the model's train-mode BN (the statistics the training forward
will use) but restores every running statistic afterwards, so selection never moves them. The
paper's choices: plain augmentation for the first 5 epochs from scratch (``warmup``, a fraction
of training: 5 of 200 epochs), and optionally low-resolution selection (``low_res=16`` on
CIFAR: choose on bilinearly downsampled copies, train on the full-resolution one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from studykit.attacks import attack_mode
from studykit.augment import (
    apply_cutmix,
    augmix,
    cutout,
    gaussian_noise,
    randaugment,
    sample_cutmix_params,
)
from studykit.augment.rand_augment import MAX_MAGNITUDE
from studykit.checks import AT_LEAST_1, FRACTION, POSITIVE, Range
from studykit.methods.base import Method, MethodConfig, StepOutput, register_method

AUGMENTATIONS = ("gauss", "cutout", "cutmix", "randaugment", "augmix")


@dataclass(frozen=True, kw_only=True)
class MaxUpConfig(MethodConfig):
    """MaxUp options; defaults are the paper's CIFAR values (MaxUp+Cutout, ResNet-110: m = 4).

    ``warmup``: fraction of training with plain augmentation (one copy) before MaxUp starts;
    the paper trains 5 epochs of 200 that way from scratch. ``low_res``: side in pixels of the
    copies the worst one is chosen on (None: full resolution). ``randaugment_n`` and
    ``randaugment_m``: RandAugment's N (ops per copy) and M (magnitude, 0..30), used by
    ``augmentation="randaugment"`` only (and only then stored with the run).
    """

    augmentation: str = "cutout"
    m: int = 4
    sigma: float = 0.25
    cutout_size: int = 16
    cutmix_alpha: float = 1.0
    randaugment_n: int = 3
    randaugment_m: float = 5.0
    warmup: float = 5 / 200
    low_res: int | None = None

    RANGES = {"m": AT_LEAST_1, "cutout_size": AT_LEAST_1, "cutmix_alpha": POSITIVE,
              "warmup": FRACTION, "low_res": AT_LEAST_1,
              "randaugment_m": Range(0, MAX_MAGNITUDE)}
    CHOICES = {"augmentation": AUGMENTATIONS}

    def record(self) -> dict:
        out = super().record()
        if self.augmentation != "randaugment":  # runs stored before RandAugment keep their hash
            del out["randaugment_n"], out["randaugment_m"]
        return out


@register_method("maxup")
class MaxUp(Method):
    Config = MaxUpConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plain = False

    def set_progress(self, step: int, total_steps: int) -> None:
        self.plain = step < self.config.warmup * total_steps

    def augment(self, x: torch.Tensor, y: torch.Tensor, copies: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                     torch.Tensor]:
        """``copies`` draws from P for every image, copy-major: ``(x', y_a, y_b, lam)`` with
        loss lam CE(y_a) + (1 - lam) CE(y_b) (lam = 1 but for CutMix)."""
        c = self.config
        xr, yr = x.repeat(copies, 1, 1, 1), y.repeat(copies)
        lam = torch.ones(xr.shape[0], device=x.device)
        y_b = yr
        if c.augmentation == "gauss":
            xr = gaussian_noise(xr, c.sigma, generator=generator)
        elif c.augmentation == "cutout":
            xr = cutout(xr, c.cutout_size, generator=generator)
        elif c.augmentation == "augmix":
            xr = augmix(xr, generator=generator)
        elif c.augmentation == "randaugment":
            xr = randaugment(xr, c.randaugment_n, c.randaugment_m, generator=generator)
        else:  # cutmix: a partner drawn from the batch (any copy; copies repeat the images)
            params = sample_cutmix_params(xr.shape[0], xr.shape[2], xr.shape[3],
                                          alpha=c.cutmix_alpha, generator=generator)
            xr = apply_cutmix(xr, params)
            y_b = yr[params.perm.to(y.device)]
            lam = params.lam.to(x.device)
        return xr, yr, y_b, lam

    def select_worst(self, model: nn.Module, xr: torch.Tensor, y_a: torch.Tensor,
                     y_b: torch.Tensor, lam: torch.Tensor, n: int) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
        """Per image, the index (into the copy-major batch) of the copy with the largest loss,
        and the (m, N) losses."""
        m = xr.shape[0] // n
        sel = xr
        if self.config.low_res is not None and self.config.low_res < xr.shape[-1]:
            sel = F.interpolate(xr, size=self.config.low_res, mode="bilinear",
                                align_corners=False, antialias=True)
        with attack_mode(model, eval_mode=False), torch.no_grad():
            losses = mixed_ce(model(sel), y_a, y_b, lam, reduction="none").view(m, n)
        best = losses.argmax(0) * n + torch.arange(n, device=xr.device)
        return best, losses

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        c = self.config
        g = self.rng(x.device)
        n = x.shape[0]
        copies = 1 if self.plain else c.m
        xr, y_a, y_b, lam = self.augment(x, y, copies, g)
        metrics: dict[str, torch.Tensor | float] = {"maxup_active": float(copies > 1)}
        if copies > 1:
            best, losses = self.select_worst(model, xr, y_a, y_b, lam, n)
            xr, y_a, y_b, lam = xr[best], y_a[best], y_b[best], lam[best]
            metrics["copy_loss_gap"] = (losses.max(0).values - losses.mean(0)).mean()
        logits = model(xr)
        loss = mixed_ce(logits, y_a, y_b, lam)
        return StepOutput(loss=loss, logits=logits, metrics=metrics)


def mixed_ce(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
    """lam CE(logits, y_a) + (1 - lam) CE(logits, y_b), per sample or averaged."""
    loss = (lam * F.cross_entropy(logits, y_a, reduction="none")
            + (1 - lam) * F.cross_entropy(logits, y_b, reduction="none"))
    return loss if reduction == "none" else loss.mean()
