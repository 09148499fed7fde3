"""Batched on-device image augmentations with per-sample, replayable parameters.

- :mod:`~studykit.augment.colour`: autocontrast, equalize, posterize, solarize (Pillow's LUTs).
- :mod:`~studykit.augment.geometric`: affine, rotate, shear, translate (Pillow's resampling).
- :mod:`~studykit.augment.augmix_params`, :mod:`~studykit.augment.chains`,
  :mod:`~studykit.augment.mixing`: AugMix's random parameters, chain engine and mixing.
- :mod:`~studykit.augment.enhance`: brightness, contrast, saturation, sharpness
  (Pillow's ``ImageEnhance``).
- :mod:`~studykit.augment.rand_augment`: RandAugment's random parameters and engine.
- :mod:`~studykit.augment.occlusion`: Cutout, CutMix and Gaussian noise.

Every op takes and returns float NCHW images in [0, 1] on any device; sampling is kept apart
from applying, so AugMax, MaxUp and AdA can replay and differentiate the same draws.
"""

from studykit.augment.augmix_params import AUGMIX_OPS, AugMixParams, sample_augmix_params
from studykit.augment.chains import CHAIN_MODES, augmix_chains
from studykit.augment.colour import autocontrast, equalize, posterize, solarize
from studykit.augment.enhance import brightness, contrast, saturation, sharpness
from studykit.augment.geometric import (
    AFFINE_OPS,
    affine,
    rotate,
    shear_x,
    shear_y,
    translate_x,
    translate_y,
)
from studykit.augment.mixing import augmix, augmix_views, mix
from studykit.augment.occlusion import (
    CutMixParams,
    apply_cutmix,
    apply_cutout,
    cutmix,
    cutout,
    gaussian_noise,
    sample_cutmix_params,
    sample_cutout_centers,
)
from studykit.augment.rand_augment import (
    RANDAUGMENT_OPS,
    RandAugmentParams,
    apply_randaugment,
    check_randaugment,
    randaugment,
    sample_randaugment_params,
)

__all__ = [
    "AFFINE_OPS",
    "AUGMIX_OPS",
    "AugMixParams",
    "CHAIN_MODES",
    "CutMixParams",
    "RANDAUGMENT_OPS",
    "RandAugmentParams",
    "affine",
    "apply_cutmix",
    "apply_cutout",
    "apply_randaugment",
    "augmix",
    "augmix_chains",
    "augmix_views",
    "autocontrast",
    "brightness",
    "check_randaugment",
    "contrast",
    "cutmix",
    "cutout",
    "equalize",
    "gaussian_noise",
    "mix",
    "posterize",
    "randaugment",
    "rotate",
    "sample_augmix_params",
    "sample_cutmix_params",
    "sample_cutout_centers",
    "sample_randaugment_params",
    "saturation",
    "sharpness",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
]
