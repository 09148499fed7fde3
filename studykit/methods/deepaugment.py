"""DeepAugment (Hendrycks et al., ICCV 2021, "The Many Faces of Robustness"), as the AdA paper
(Calian et al., ICLR 2022) uses it for its baseline: images passed through an image-to-image
network whose weights are perturbed at random,

    x_hat = c_{phi+beta}(x),   beta_l ~ U{ ||beta_l|| <= nu ||phi_l|| }  per example,

i.e. AdA's random start with no inner maximization: the same corruption network, balls, SSIM
guard and batch as ``ada`` (``methods.perturbed_net``), so the two differ only in the search
and in the batch: as the AdA paper uses it (Appendix A, after Hendrycks et al.), each training
image is drawn from the clean set or the DeepAugment-processed one, so by default half of every
batch is corrupted (``clean_share`` 0.5; AdA corrupts all of it).

Departures from the original DeepAugment: it perturbs a pretrained EDSR/CAE with hand-made
operations (zeroing, negating, transposing weights; noise on activations) and processes the
training set offline, once, before crop and flip; here the perturbation is AdA's weight ball and
the images are made on the fly after crop and flip, a new draw every time an image is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from studykit.methods.base import register_method
from studykit.methods.perturbed_net import PerturbedNetConfig, PerturbedNetMethod


@dataclass(frozen=True, kw_only=True)
class DeepAugmentConfig(PerturbedNetConfig):
    clean_share: float = 0.5


@register_method("deepaugment")
class DeepAugment(PerturbedNetMethod):
    Config = DeepAugmentConfig
    config: DeepAugmentConfig
