"""DeepAugment (Hendrycks et al., ICCV 2021, "The Many Faces of Robustness"): training images
passed through a pretrained image-to-image network distorted at random, mixed with the clean
training set.

``distortion="hendrycks"`` (default) is the paper's: every image draws its own set of large
operations on the network's weights and features (zeroing, negating, transposing and scaling
weights, random convolution filters, swapped activations, noise, skipped blocks; each with its
own probability, ``studykit.nets.distortions``). ``distortion="ball"`` is a random draw in AdA's
weight balls instead,

    x_hat = c_{phi+beta}(x),   beta_l ~ U{ ||beta_l|| <= nu ||phi_l|| }  per example,

i.e. AdA's random start with no search (``nu`` applies to this one only).

The network and the batch are AdA's (``methods.perturbed_net``): the kit's pretrained
corruption network, and, as the AdA paper uses DeepAugment (Appendix A, after Hendrycks et al.),
each training image drawn from the clean set or the DeepAugment-processed one, so by default
half of every batch is distorted (``clean_share`` 0.5). DeepAugment has no SSIM guard
(``ssim_threshold`` 0; AdA's guard is there as an option).

Departures from the original DeepAugment: it distorts a pretrained EDSR and a CAE and processes
the training set offline, once, before crop and flip; here the network is the kit's
EDSR-style reconstruction net and the images are made on the fly after crop and flip, a new
draw every time an image is seen (see ``studykit.nets.distortions`` for the operations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from studykit.methods.base import register_method
from studykit.methods.perturbed_net import PerturbedNetConfig, PerturbedNetMethod
from studykit.nets.distortions import distort

DISTORTIONS = ("hendrycks", "ball")


@dataclass(frozen=True, kw_only=True)
class DeepAugmentConfig(PerturbedNetConfig):
    """``distortion``: ``hendrycks`` (the paper's operations) or ``ball`` (a random draw in
    AdA's weight balls of radius ``nu``). Other options: those of ``ada`` without the search."""

    distortion: str = "hendrycks"
    ssim_threshold: float = 0.0
    clean_share: float = 0.5

    CHOICES: ClassVar[dict[str, tuple]] = {**PerturbedNetConfig.CHOICES,
                                           "distortion": DISTORTIONS}


@register_method("deepaugment")
class DeepAugment(PerturbedNetMethod):
    Config = DeepAugmentConfig
    config: DeepAugmentConfig

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, Any]:
        if self.config.distortion == "ball":
            return super().perturb(model, x, y, generator)
        return distort(self.net, x, generator=generator), None
